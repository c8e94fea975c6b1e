"""The model folder: config + schema + fitted encoder + EMA weights + versions, saved together.

    model/
      config.json    the resolved Config (sampling reads its defaults from here)
      schema.yaml    the extract's schema
      encoder.json   the fitted encoder state (plain JSON)
      weights.pt     the EMA weights: a dict of tensors, loaded with weights_only=True
      meta.json      channels, training summary, library versions

`HealthGymModel.load(folder)` rebuilds everything on CPU (or a chosen device) from these
files alone; nothing is pickled, nothing is re-declared.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from diffusion.bundle.meta import ModelMeta
from diffusion.bundle.upgrade import read_folder
from diffusion.config import Config
from diffusion.data.dates import Dating
from diffusion.data.schema import Schema
from diffusion.encoding import FORMAT, TrajectoryEncoder
from diffusion.encoding.layout import visit_mask
from diffusion.errors import InputError
from diffusion.model.build import build_denoiser
from diffusion.model.sampler import sample_loop
from diffusion.model.schedule import GaussianDiffusion
from diffusion.privacy.ids import IdScheme
from diffusion.privacy.protection import Protection

FILES = ("config.json", "schema.yaml", "encoder.json", "weights.pt", "meta.json")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": torch.__version__, "format": str(FORMAT)}
    for pkg in ("healthgym", "numpy", "pandas"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


@dataclass
class HealthGymModel:
    config: Config
    schema: Schema
    encoder: TrajectoryEncoder
    net: torch.nn.Module
    meta: ModelMeta = field(default_factory=ModelMeta)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def diffusion(self) -> GaussianDiffusion:
        return GaussianDiffusion.from_config(
            self.config.diffusion, self.encoder.discrete_groups, self.encoder.state.discrete_scale, self.encoder.static_channels
        )

    # -- sampling ---------------------------------------------------------------------------
    def sample_tensor(
        self,
        n: int,
        *,
        seed: int = 0,
        method: str | None = None,
        steps: int | None = None,
        eta: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        fixed: dict[int, float] | None = None,
    ) -> np.ndarray:
        """n encoded patients [n, channels, time], in batches of sampling.batch_size; `fixed`
        channels (index -> value) are inpainted at that value (`diffusion.bundle.conditional`).
        A network that sees only the visits is sampled in batches of similar lengths, each cut to
        its longest patient (the padding beyond holds the known channels' values)."""
        s = self.config.sampling
        gen = torch.Generator().manual_seed(seed)
        lengths = self.encoder.draw_lengths(n, np.random.default_rng(seed))
        k_idx, k_val = self._known(lengths, fixed)
        C, L = len(self.encoder.channels), self.encoder.length
        bucketed = bool(getattr(self.net, "takes_visits", False))
        order = np.argsort(lengths, kind="stable") if bucketed else np.arange(n)
        out = np.zeros((n, C, L), np.float32)
        out[:, k_idx, :] = k_val
        self.net.eval()
        diffusion = self.diffusion
        for done in range(0, n, s.batch_size):
            rows = order[done : done + s.batch_size]
            cut = int(lengths[rows].max()) if bucketed else L
            x = sample_loop(
                self.net,
                diffusion,
                (len(rows), C, cut),
                method=method or s.method,
                steps=steps or s.steps,
                eta=s.eta if eta is None else eta,
                min_logsnr=s.min_logsnr,
                generator=gen,
                static_channels=self.encoder.static_channels,
                clip=self.encoder.clip_bounds,
                device=self.device,
                known=(k_idx, torch.from_numpy(np.ascontiguousarray(k_val[rows][..., :cut]))),
                visits=torch.from_numpy(visit_mask(lengths[rows], cut)),
            )
            out[rows, :, :cut] = x.numpy()
            if progress is not None:
                progress(done + len(rows), n)
        return out

    def _known(self, lengths: np.ndarray, fixed: dict[int, float] | None) -> tuple[list[int], np.ndarray]:
        """(channel indices, values [n, k, L]) inpainted while sampling: validity, length and `fixed`."""
        k_idx, k_val = self.encoder.known_channels(lengths)
        if fixed:
            k_idx = k_idx + list(fixed)
            extra = np.broadcast_to(
                np.array(list(fixed.values()), np.float32)[None, :, None], (len(lengths), len(fixed), k_val.shape[2])
            )
            k_val = np.concatenate([k_val, extra], axis=1)
        return k_idx, k_val

    def calibrate(
        self,
        n: int = 512,
        *,
        seed: int = 1,
        steps: tuple[str, ...] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, dict[str, dict[str, float]]]:
        """Calibrate decoding on n generated patients (`diffusion.encoding.calibration`; `steps`:
        those of the config by default); the parameters are saved with the model. Samples nothing
        when the schema leaves nothing to calibrate."""
        if not self.encoder.calibratable:
            return {}
        steps = tuple(self.config.encoding.calibration_steps if steps is None else steps)
        return self.encoder.calibrate(self.sample_tensor(n, seed=seed, progress=progress), steps)

    def sample(
        self,
        n: int,
        *,
        seed: int = 0,
        method: str | None = None,
        steps: int | None = None,
        eta: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        fixed: dict[int, float] | None = None,
        finish: bool = True,
    ) -> pd.DataFrame:
        """n synthetic patients in the extract's own long format, through the model's value
        protection (`diffusion.privacy.protection`), then (unless `finish` is false) `finish`ed: dates
        and ids as released. `fixed`: inpainted channels (see `sample_tensor`)."""
        if n < 1:
            raise InputError(f"The number of patients to sample must be at least 1, got {n}.")
        x = self.sample_tensor(n, seed=seed, method=method, steps=steps, eta=eta, progress=progress, fixed=fixed)
        out = self.protect(self.encoder.decode(x), seed=seed).reset_index(drop=True)
        return self.finish(out) if finish else out

    def finish(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Decoded patients as released: dates written back (`diffusion.data.dates`) and ids that never
        equal a real one (`diffusion.privacy.ids`), where the folder records them; rows kept in order."""
        if self.meta.dating:
            frame = Dating.from_dict(self.meta.dating).apply(frame, self.schema)
        if self.meta.ids:
            frame = IdScheme.from_dict(self.meta.ids).apply(frame, self.schema.id)
        return frame

    def numbers(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A frame in the extract's format as the engine's numbers: dates as numbers, coarsened as
        releases are (`diffusion.data.dates`); as it is for a schema without dates."""
        raw = self.meta.dating
        return Dating.from_dict(raw).numbers(frame, self.schema) if raw else frame

    def judged(
        self, real: pd.DataFrame, synthetic: pd.DataFrame, holdout: pd.DataFrame | None, *, seed: int
    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
        """(real, synthetic, holdout) as the evaluation judges them: as the engine's numbers
        (`numbers`), the real frames through value protection (`protect`, seeds seed and seed + 1)."""
        held = self.protect(self.numbers(holdout), seed=seed + 1) if holdout is not None else None
        return self.protect(self.numbers(real), seed=seed), self.numbers(synthetic), held

    @property
    def id_scheme(self) -> str | None:
        """How this model's synthetic ids avoid the real ones, in words (None: not recorded)."""
        return IdScheme.from_dict(self.meta.ids).describe() if self.meta.ids else None

    def protect(self, frame: pd.DataFrame, *, seed: int) -> pd.DataFrame:
        """A long frame (sampled, or real patients to judge against) through the model's value
        protection (`diffusion.privacy.protection`); as it is for a folder saved without one."""
        raw = self.meta.protection
        return Protection.from_dict(raw).apply(frame, self.schema, seed=seed) if raw else frame

    # -- persistence -------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the folder atomically: a temporary sibling, then one rename."""
        folder = Path(folder)
        if folder.exists():
            raise FileExistsError(f"Model folder {folder} already exists; refusing to overwrite it.")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-model-", dir=folder.parent))
        try:
            self.config.save(tmp / "config.json")
            self.schema.save(tmp / "schema.yaml")
            (tmp / "encoder.json").write_text(json.dumps(self.encoder.state_dict(), indent=1))
            weights = {k: v.detach().to("cpu").contiguous() for k, v in self.net.state_dict().items()}
            torch.save(weights, tmp / "weights.pt")
            meta = self.meta.to_dict()
            meta.update({"channels": self.encoder.channel_names, "length": self.encoder.length, "versions": versions()})
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, device: str | torch.device = "cpu") -> "HealthGymModel":
        folder = Path(folder)
        missing = [f for f in FILES if not (folder / f).is_file()]
        if missing:
            raise InputError(f"{folder} is not a Health Gym model folder: it lacks {missing}.")
        config, encoder_state = read_folder(folder)  # older formats converted (or refused) here only
        schema = Schema.load(folder / "schema.yaml")
        encoder = TrajectoryEncoder.from_state(schema, encoder_state)
        meta = ModelMeta.from_dict(json.loads((folder / "meta.json").read_text()))
        net = build_denoiser(len(encoder.channels), config.model)
        state = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)  # no arbitrary pickle
        net.load_state_dict(state)
        device = torch.device(device)
        return cls(config=config, schema=schema, encoder=encoder, net=net.to(device).eval(), meta=meta, device=device)
