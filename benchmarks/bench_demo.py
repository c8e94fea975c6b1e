"""Profile of `healthgym demo` by stage, over seeds: wall time and the verdict of each run.

    python benchmarks/bench_demo.py [--seeds 0,1] [--set section.key=value ...]

Runs the real command (`.venv/bin/healthgym demo --set pipeline.seed=S`) in a fresh folder per
seed, timestamps every line it prints as it arrives, and splits the run into stages at the lines
that open them: startup (imports, Prefect's temporary server), reading and validation, training,
calibration, sampling, evaluation, and logging + registration + release (to the end of the
process). Prints one row per seed, then the headline figures each run printed. Run it on an
otherwise idle machine: the figures are wall-clock.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (stage, pattern of the first line that belongs to it), in the order the demo prints them
STAGES = (
    ("startup", r""),
    ("read + validate", r"Beginning flow run"),
    ("training", r"Split patients|Network width"),
    ("calibration", r"Calibrating decoding"),
    ("sampling", r"Sampling \d+ synthetic"),
    ("evaluation", r"sampled \d+/\d+ patients"),
    ("log + register + release", r"Evaluation (passed|FAILED)"),
)


def profile(seed: int, extra: list[str]) -> tuple[dict[str, float], list[str]]:
    """Stage -> seconds for one demo run, and the lines worth repeating (verdict, figures)."""
    cmd = [str(ROOT / ".venv/bin/healthgym"), "demo", "--set", f"pipeline.seed={seed}", *sum((["--set", s] for s in extra), [])]
    start = time.monotonic()
    marks, keep = {"startup": 0.0}, []
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as work:
        proc = subprocess.Popen(
            cmd,
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.monotonic() - start
            for stage, pattern in STAGES[1:]:
                if stage not in marks and re.search(pattern, line):
                    marks[stage] = now
            if re.search(r"Release folder|Headline metrics|stopped by|Privacy against|failed gate", line):
                keep.append(line.strip()[:220])
        code = proc.wait()
    end = time.monotonic() - start
    order = [s for s, _ in STAGES if s in marks]
    seconds = {s: (marks[order[i + 1]] if i + 1 < len(order) else end) - marks[s] for i, s in enumerate(order)}
    seconds["total"] = end
    keep.append(f"exit code {code}")
    return seconds, keep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    names = [s for s, _ in STAGES] + ["total"]
    print("seed " + "".join(f"{n:>26}" for n in names))
    notes = []
    for seed in (int(s) for s in args.seeds.split(",")):
        seconds, keep = profile(seed, args.set)
        print(f"{seed:<5}" + "".join(f"{seconds.get(n, float('nan')):>25.1f}s" for n in names), flush=True)
        notes.append((seed, keep))
    for seed, keep in notes:
        print(f"\nseed {seed}:\n  " + "\n  ".join(keep))


if __name__ == "__main__":
    main()
