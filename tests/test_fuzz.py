"""A seeded fuzz of extracts against validation (`tests/cohortgen.py`): hostile extracts (each
broken one way) and benign ones go to `healthgym validate`; every hostile one is refused with
exit 2 and a paragraph, every benign one accepted, never a traceback."""

import contextlib
import io
from pathlib import Path

import pytest
import yaml
from cohortgen import HOSTILE, benign, hostile

FUZZ_CASES = 120  # hostile extracts, and as many benign ones


def _validate(drawn, folder: Path) -> tuple[int, str]:
    from flows.cli import main

    data, schema = folder / "f.csv", folder / "f.yaml"
    drawn.df.to_csv(data, index=False)
    schema.write_text(yaml.safe_dump(drawn.schema))
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(["validate", str(data), "--schema", str(schema)])
    return rc, err.getvalue()


@pytest.mark.slow
def test_fuzzed_extracts_hostile_refused_benign_accepted(tmp_path):
    seen = set()
    for seed in range(FUZZ_CASES):
        bad, how = hostile(seed)
        rc, err = _validate(bad, tmp_path)
        seen.add(how)
        assert rc == 2 and "error: " in err and "Traceback" not in err, f"hostile {how} (seed {seed}) exit {rc}: {err}"
        good = benign(seed)
        rc, err = _validate(good, tmp_path)
        assert rc == 0, f"benign (seed {seed}) {good.shape} exit {rc}: {err}"
    assert seen == set(HOSTILE)  # every way of breaking an extract was drawn
