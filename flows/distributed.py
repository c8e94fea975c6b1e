"""Data-parallel training (PyTorch DDP) launched by torchrun.

Every process reads the extract, checks its fingerprint, takes the same seeded training
patients and runs the same `fit`; `diffusion.training.train` averages their gradients (gloo on
CPU, NCCL on CUDA) and rank 0 alone checks, checkpoints and, at the end, saves the model folder
and the training result. Patient data never travels between processes: each reads the extract.

    # one node, N processes (what `healthgym train` does when train.processes = N > 1)
    torchrun --standalone --nproc_per_node N -m flows.distributed \\
        --data X.csv --schema S.yaml --config C.yaml --out model/ [--checkpoints DIR]
    # several nodes: the same command on each, with --nnodes, --node_rank and a rendezvous
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint HEAD:29500 -m flows.distributed ...

`tasks.torchrun.launch` runs the one-node form from Python and returns the fitted model and
result. Rank 0 writes `train_result.json` (the summary and the loss history) beside the model files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from diffusion.config import Config
from diffusion.training.parallel import world

RESULT = "train_result.json"  # beside the model files, unless --result names another file


def backend(config: Config) -> str:
    """The process group's backend: the configured one, else NCCL on CUDA and gloo on CPU."""
    if config.train.backend != "auto":
        return config.train.backend
    return "nccl" if torch.cuda.is_available() and config.train.device != "cpu" else "gloo"


def main(argv: list[str] | None = None) -> int:
    """One torchrun process: fit on the extract's training patients; rank 0 saves."""
    from diffusion.bundle.fit import fit
    from diffusion.data.schema import Schema
    from diffusion.data.split import split_patients
    from expectations.reading import fingerprint, read_extract

    p = argparse.ArgumentParser(prog="python -m flows.distributed", description=main.__doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--schema", required=True)
    p.add_argument("--config", help="YAML or JSON config file (default: the defaults)")
    p.add_argument("--out", required=True, help="the model folder rank 0 writes")
    p.add_argument("--checkpoints", help="folder for resumable checkpoints (rank 0 writes, every rank resumes)")
    p.add_argument("--fingerprint", help="the extract's expected SHA-256: refuse a file that changed")
    p.add_argument("--result", help=f"where rank 0 writes the training summary (default: {RESULT} in --out)")
    args = p.parse_args(argv)

    config = Config.load(args.config) if args.config else Config()
    schema = Schema.load(args.schema)
    if args.fingerprint and fingerprint(args.data) != args.fingerprint:
        raise SystemExit(f"The extract {args.data} changed since training was asked for (fingerprint differs).")
    if backend(config) == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    torch.distributed.init_process_group(backend(config))
    try:
        df = read_extract(args.data)
        pipe = config.pipeline
        train, _ = split_patients(df, schema.id, pipe.holdout_fraction, pipe.seed, pipe.min_holdout_patients)
        workdir = Path(args.checkpoints) if args.checkpoints else None
        # not calibrated here: the flow keeps the trained model first, then calibrates it
        model, result = fit(train, schema, config, workdir=workdir, real_ids=df[schema.id], calibrate=False)
        if world()[0] == 0:
            out = model.save(args.out)
            Path(args.result or out / RESULT).write_text(json.dumps({**result.summary(), "history": result.history}))
        torch.distributed.barrier()  # no process leaves before the folder is written
    finally:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
