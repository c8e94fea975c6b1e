"""Where the loop runs: the device, and the torch.distributed group when there is one (DDP).

Outside a group every method is the identity, so the loop reads the same with one process or many.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def pick_device(name: str) -> torch.device:
    """`auto`: CUDA when available, else the CPU; `cuda` without a device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda was asked for, but no CUDA device is available")
    return torch.device(name)


def world() -> tuple[int, int]:
    """(rank, world size) of this process's torch.distributed group; (0, 1) outside one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@dataclass(frozen=True)
class Group:
    """This process's place in the data-parallel group: rank 0 alone checks, keeps and writes."""

    rank: int
    size: int

    @classmethod
    def current(cls) -> "Group":
        return cls(*world())

    @property
    def main(self) -> bool:
        return self.rank == 0

    def agree(self, code: int, device: torch.device) -> int:
        """Rank 0's `code` on every rank (a stop decision must be the same everywhere, or the group hangs)."""
        if self.size == 1:
            return code
        flag = torch.tensor([code], device=device)
        torch.distributed.broadcast(flag, 0)
        return int(flag.item())

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """`model` under DistributedDataParallel in a group (every rank starts from rank 0's weights)."""
        if self.size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[torch.cuda.current_device()] if device.type == "cuda" else None)
        net.self_condition = getattr(model, "self_condition", False)  # the loss asks the network; DDP does not pass attributes on
        net.takes_visits = getattr(model, "takes_visits", False)
        return net

    def generator_states(self, gen: torch.Generator) -> list[torch.Tensor | None]:
        """Every rank's generator state (on every rank), so a resumed run draws what it would have drawn."""
        if self.size == 1:
            return [gen.get_state()]
        states: list[torch.Tensor | None] = [None] * self.size
        torch.distributed.all_gather_object(states, gen.get_state())
        return states

    def replicas_agree(self, model: torch.nn.Module) -> bool | None:
        """Whether every rank holds the same weights (averaged gradients keep them equal); None alone."""
        if self.size == 1:
            return None
        total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
        sums = [torch.zeros_like(total) for _ in range(self.size)]
        torch.distributed.all_gather(sums, total)
        return bool(all(torch.equal(s, sums[0]) for s in sums))
