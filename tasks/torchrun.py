"""Launching data-parallel training: torchrun over `flows.distributed` on this node, from Python.

The processes are a boundary, not an import: each runs `python -m flows.distributed` (the entry
point, which reads the extract itself), and rank 0 hands back the model folder and
`train_result.json` through a temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from diffusion.config import Config
from diffusion.training.loop import TrainResult

ENTRY = "flows.distributed"  # the torchrun entry point (a module name: run as a process, not imported)


def launch(
    data: str | Path,
    schema: str | Path,
    config: Config,
    *,
    checkpoints: str | Path | None = None,
    fingerprint: str | None = None,
):
    """Train with `config.train.processes` processes on this node (torchrun). Returns
    (HealthGymModel, TrainResult), decoding not yet calibrated (`diffusion.bundle.fit.calibrate_decoding`);
    raises RuntimeError when a process fails."""
    from diffusion.bundle.folder import HealthGymModel

    n = config.train.processes
    with tempfile.TemporaryDirectory(prefix="healthgym-ddp-") as tmp:
        cfg_file, out, summary = Path(tmp) / "config.json", Path(tmp) / "model", Path(tmp) / "train_result.json"
        cfg_file.write_text(json.dumps(config.to_dict()))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
        cmd += ["-m", ENTRY, "--data", str(data), "--schema", str(schema)]
        cmd += ["--config", str(cfg_file), "--out", str(out), "--result", str(summary)]
        cmd += ["--checkpoints", str(checkpoints)] if checkpoints else []
        cmd += ["--fingerprint", fingerprint] if fingerprint else []
        env = dict(os.environ)
        # the processes share this node's cores; torchrun would otherwise give each one thread
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        code = subprocess.run(cmd, env=env).returncode
        if code != 0 or not summary.exists():
            raise RuntimeError(
                f"Data-parallel training ({n} processes, torchrun) failed with exit code {code}; see its log above."
            )
        return HealthGymModel.load(out), TrainResult(**json.loads(summary.read_text()))
