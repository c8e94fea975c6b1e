"""One rule reads labels and booleans everywhere (`diffusion.data.labels`): tested on each spelling,
and end to end through the schema, validation, the encoder and the evaluation."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from diffusion.data.labels import as_binary, as_labels, canonical_label
from diffusion.data.schema import Schema
from diffusion.encoding import TrajectoryEncoder
from evaluation.data import tidy
from expectations import validate_extract


@pytest.mark.parametrize("value", [True, np.bool_(True), "True", "true", "TRUE", " true "])
def test_every_spelling_of_true_is_one_label_and_reads_as_one(value):
    assert canonical_label(value) == "true"
    assert as_binary(pd.Series([value], dtype=object)).tolist() == [1.0]


@pytest.mark.parametrize("value", [False, "False", "false", "FALSE", "no", "0", 0, 0.0, "0.0"])
def test_every_spelling_of_false_reads_as_zero(value):
    assert as_binary(pd.Series([value], dtype=object)).tolist() == [0.0]


def test_numbers_text_and_missing_values():
    assert [canonical_label(v) for v in (1, 1.0, "1", np.int64(1), 2.5, " Zeta ")] == ["1", "1", "1", "1", "2.5", "Zeta"]
    assert as_labels(pd.Series(["a", None, np.nan, 3.0], dtype=object)).tolist() == ["a", None, None, "3"]
    assert np.isnan(as_binary(pd.Series(["maybe", None], dtype=object))).all()
    assert as_binary(pd.Series([0, 1, 2])).tolist()[:2] == [0.0, 1.0] and np.isnan(as_binary(pd.Series([2]))[0])


def _extract() -> tuple[pd.DataFrame, Schema]:
    rng = np.random.default_rng(0)
    n, visits = 30, 3
    text = "pid,t,flag,stage\n" + "".join(
        f"{p},{t},{'True' if rng.random() < 0.5 else 'False'},{['I', 'II'][int(rng.random() < 0.5)]}\n"
        for p in range(n)
        for t in range(visits)
    )
    df = pd.read_csv(io.StringIO(text), dtype={"flag": str})  # cells spelled True / False, read as text
    schema = Schema.from_dict(
        {
            "name": "labels",
            "id": "pid",
            "time": "t",
            "regular": True,
            "max_length": visits,
            "columns": {
                "flag": {"type": "categorical", "categories": ["False", "True"]},  # quoted in YAML, as people write it
                "stage": {"type": "categorical", "categories": ["I", "II"]},
            },
        }
    )
    return df, schema


def test_a_categorical_declared_as_quoted_booleans_validates_encodes_and_evaluates():
    df, schema = _extract()
    assert schema.column("flag").categories == ("false", "true")
    validate_extract(df, schema).raise_for_failures()  # no "values must be one of the declared categories"
    enc = TrajectoryEncoder(schema).fit(df)
    assert (
        enc.decode(enc.encode(df).x)["flag"].tolist() == df.sort_values(["pid", "t"])["flag"].tolist()
    )  # spelled as in the extract
    assert set(tidy(df, schema)["flag"].dropna()) == {"true", "false"}
    as_bool = df.assign(flag=df["flag"] == "True")  # the same extract with a boolean column
    validate_extract(as_bool, schema).raise_for_failures()
    assert set(tidy(as_bool, schema)["flag"].dropna()) == {"true", "false"}
