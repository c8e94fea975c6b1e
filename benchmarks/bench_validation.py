"""Benchmark: validate a synthetic 1,000,000-row x 20-column extract against a generated schema.

    .venv/bin/python benchmarks/bench_validation.py [--rows 1000000] [--docs DIR] [--repeat 1]

Prints the seconds `expectations.validate.validate_extract` takes (GX import and context
included in the first run). The issue's bar: <= 60 s on the 2-core CI machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion.data.schema import Schema  # noqa: E402


def make_schema(n_features: int = 18, min_patients: int = 10) -> Schema:
    """id + time + n_features columns, cycling through every column type."""
    columns: dict[str, dict] = {}
    for i in range(n_features):
        kind = i % 6
        if kind == 0:
            columns[f"real{i}"] = {"type": "real", "min": 0, "max": 1000}
        elif kind == 1:
            columns[f"lab{i}"] = {"type": "real", "min": 0, "nullable": True, "max_missing": 0.3}
        elif kind == 2:
            columns[f"count{i}"] = {"type": "integer", "min": 0, "max": 500}
        elif kind == 3:
            columns[f"cat{i}"] = {"type": "categorical", "categories": ["a", "b", "c", "d"]}
        elif kind == 4:
            columns[f"flag{i}"] = {"type": "binary", "nullable": True}
        else:
            columns[f"static{i}"] = {"type": "categorical", "static": True, "categories": ["1", "2", "3"]}
    return Schema.from_dict(
        {
            "name": "bench",
            "id": "id",
            "time": "t",
            "regular": False,
            "max_length": 16,
            "min_patients": min_patients,
            "columns": columns,
        },
        source="benchmark schema",
    )


def make_extract(schema: Schema, rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 17, size=rows // 4)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), rows) + 1]
    lengths[-1] -= lengths.sum() - rows
    pid = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    step = np.arange(rows) - np.repeat(starts, lengths)
    data: dict[str, np.ndarray] = {"id": pid + 100_000, "t": step * 30 + rng.integers(0, 29, size=rows)}
    for c in schema.columns:
        if c.type == "real":
            v = rng.gamma(2.0, 50.0, size=rows).clip(0, 1000)
            if c.nullable:
                v[rng.random(rows) < 0.1] = np.nan
            data[c.name] = v
        elif c.type == "integer":
            data[c.name] = rng.integers(0, 500, size=rows)
        elif c.type == "binary":
            v = rng.integers(0, 2, size=rows).astype(float)
            v[rng.random(rows) < 0.05] = np.nan
            data[c.name] = v
        elif c.static:
            per_patient = rng.choice(np.array(c.categories, dtype=object), size=len(lengths))
            data[c.name] = per_patient[pid]
        else:
            data[c.name] = rng.choice(np.array(c.categories, dtype=object), size=rows)
    df = pd.DataFrame(data)
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # rows in any order


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--docs", default=None, help="also build GX Data Docs into this folder")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args(argv)

    schema = make_schema()
    t0 = time.perf_counter()
    df = make_extract(schema, args.rows)
    print(
        f"built extract: {len(df):,} rows x {df.shape[1]} columns, {df['id'].nunique():,} patients "
        f"in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )

    from expectations.validate import validate_extract

    docs = args.docs or tempfile.mkdtemp(prefix="bench-docs-")
    for i in range(args.repeat):
        t0 = time.perf_counter()
        report = validate_extract(df, schema, docs_dir=Path(docs))
        seconds = time.perf_counter() - t0
        print(
            f"run {i + 1}: validate_extract {len(df):,} rows x {df.shape[1]} columns: {seconds:.1f} s "
            f"(success={report.success}, {report.summary['evaluated']} expectations, docs {report.docs_path})",
            flush=True,
        )
        if not report.success:
            print(report.message())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
