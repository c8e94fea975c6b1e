"""Data-parallel training (PyTorch DDP) launched by torchrun.

Every process reads the extract, checks its fingerprint, takes the same seeded training
patients and runs the same `fit`; `diffusion.training.train` averages their gradients (gloo on
CPU, NCCL on CUDA) and rank 0 alone checks, checkpoints and, at the end, saves the model folder
and the training result. Patient data never travels between processes: each reads the extract.

    # one node, N processes (what `healthgym train` does when train.processes = N > 1)
    torchrun --standalone --nproc_per_node N -m diffusion.distributed \\
        --data X.csv --schema S.yaml --config C.yaml --out model/ [--checkpoints DIR]
    # several nodes: the same command on each, with --nnodes, --node_rank and a rendezvous
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint HEAD:29500 -m diffusion.distributed ...

`launch` runs the one-node form from Python and returns the fitted model and result. Rank 0
writes `train_result.json` (the summary and the loss history) beside the model files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from diffusion.config import Config
from diffusion.training import TrainResult, world

RESULT = "train_result.json"


def backend(config: Config) -> str:
    """The process group's backend: the configured one, else NCCL on CUDA and gloo on CPU."""
    if config.train.backend != "auto":
        return config.train.backend
    return "nccl" if torch.cuda.is_available() and config.train.device != "cpu" else "gloo"


def launch(
    data: str | Path,
    schema: str | Path,
    config: Config,
    *,
    checkpoints: str | Path | None = None,
    fingerprint: str | None = None,
):
    """Train with `config.train.processes` processes on this node (torchrun). Returns
    (HealthGymModel, TrainResult), decoding not yet calibrated (`diffusion.fit.calibrate_decoding`);
    raises RuntimeError when a process fails."""
    from diffusion.bundle import HealthGymModel

    n = config.train.processes
    with tempfile.TemporaryDirectory(prefix="healthgym-ddp-") as tmp:
        cfg_file, out = Path(tmp) / "config.json", Path(tmp) / "model"
        cfg_file.write_text(json.dumps(config.to_dict()))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
        cmd += ["-m", "diffusion.distributed", "--data", str(data), "--schema", str(schema)]
        cmd += ["--config", str(cfg_file), "--out", str(out)]
        cmd += ["--checkpoints", str(checkpoints)] if checkpoints else []
        cmd += ["--fingerprint", fingerprint] if fingerprint else []
        env = dict(os.environ)
        # the processes share this node's cores; torchrun would otherwise give each one thread
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        code = subprocess.run(cmd, env=env).returncode
        if code != 0 or not (out / RESULT).exists():
            raise RuntimeError(
                f"Data-parallel training ({n} processes, torchrun) failed with exit code {code}; see its log above."
            )
        summary = json.loads((out / RESULT).read_text())
        return HealthGymModel.load(out), TrainResult(**summary)


def main(argv: list[str] | None = None) -> int:
    """One torchrun process: fit on the extract's training patients; rank 0 saves."""
    from diffusion.data import split_patients
    from diffusion.fit import fit
    from diffusion.schema import Schema
    from expectations.reading import fingerprint, read_extract

    p = argparse.ArgumentParser(prog="python -m diffusion.distributed", description=main.__doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--schema", required=True)
    p.add_argument("--config", help="YAML or JSON config file (default: the defaults)")
    p.add_argument("--out", required=True, help="the model folder rank 0 writes")
    p.add_argument("--checkpoints", help="folder for resumable checkpoints (rank 0 writes, every rank resumes)")
    p.add_argument("--fingerprint", help="the extract's expected SHA-256: refuse a file that changed")
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
            (out / RESULT).write_text(json.dumps({**result.summary(), "history": result.history}))
        torch.distributed.barrier()  # no process leaves before the folder is written
    finally:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
