"""The engine yardstick's summary (benchmarks/bench_engine.py): engines compared pair by pair,
cohort by cohort and seed by seed, over tables that may predate the seed column."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_engine", ROOT / "benchmarks" / "bench_engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _bench()


def row(cohort: str, engine: str, seed, auc: float, floor: float = 0.5, decoding: str = "plain") -> dict:
    return {"cohort": cohort, "engine": engine, "seed": seed, "decoding": decoding, "auc": auc, "floor": floor}


def test_pairs_match_cohort_and_seed_and_skip_what_only_one_engine_has():
    table = [
        row("a", "base", 0, 0.90),
        row("a", "base", 1, 0.70),
        row("b", "base", 0, 0.60, floor=0.40),
        row("c", "base", 0, 0.80),  # the new engine has no run of c: no pair
        row("a", "new", 1, 0.65),
        row("a", "new", 0, 0.80),
        row("b", "new", 0, 0.70, floor=0.45),  # a floor of its own: the gap, not the AUC, is compared
        row("a", "new", 0, 0.10, decoding="calibrated"),  # another decoding: not paired with plain
        {"cohort": "b", "engine": "new", "seed": 1, "decoding": "-", "error": "failed"},  # a failed run: no pair
    ]
    d = bench.paired_gaps(table, "base", "new", "plain")
    assert np.allclose(sorted(d), sorted([0.80 - 0.90, 0.65 - 0.70, (0.70 - 0.45) - (0.60 - 0.40)]))


def test_tables_written_before_the_seed_column_count_as_seed_zero():
    old = [dict(row("a", "base", float("nan"), 0.9)), {k: v for k, v in row("b", "base", 0, 0.8).items() if k != "seed"}]
    new = [row("a", "new", 0, 0.7), row("b", "new", 0, 0.9), row("a", "new", 1, 0.1)]
    d = bench.paired_gaps(old + new, "base", "new", "plain")
    assert np.allclose(sorted(d), [-0.2, 0.1])
