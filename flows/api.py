"""The Python API for notebooks, in the style of SDV: fit on a DataFrame, sample, save, load.

    from flows.api import HealthGym
    hg = HealthGym("my.yaml", overrides={"train.max_minutes": 10}).fit(df)
    syn = hg.sample(500, where="sex == 'f' and age > 60")
    hg.save("models/my-cohort");  hg = HealthGym.load("models/my-cohort")

`fit` validates the extract against the schema (Great Expectations), then trains on every
patient it is given (hold patients out yourself to judge the result: `evaluate`). The same
library the `healthgym` commands run; nothing here logs to MLflow or needs Prefect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from diffusion.bundle.conditional import sample_boosted, sample_where
from diffusion.bundle.folder import HealthGymModel
from diffusion.config import Config
from diffusion.data.schema import Schema
from diffusion.errors import InputError


class HealthGym:
    """A synthesizer of longitudinal patients for one schema (see the module docstring)."""

    def __init__(self, schema: Schema | str | Path | dict, config: Config | None = None, overrides: dict[str, Any] | None = None):
        if isinstance(schema, dict):
            schema = Schema.from_dict(schema)
        elif not isinstance(schema, Schema):
            schema = Schema.load(schema)
        self.schema = schema
        self.config = (config or Config()).with_overrides(overrides or {})
        self.model: HealthGymModel | None = None
        self.training: dict[str, Any] = {}

    def fit(self, df: pd.DataFrame, *, validate: bool = True, progress: bool = True) -> "HealthGym":
        """Validate `df` (long format, one row per visit) and train on all of its patients."""
        from diffusion.bundle.fit import fit

        if validate:
            from expectations import validate_extract

            validate_extract(df, self.schema).raise_for_failures()
        self.model, result = fit(df, self.schema, self.config, progress=progress)
        self.training = result.summary()
        return self

    def sample(
        self, n: int, *, where: str | None = None, boost: dict[tuple[str, str], float] | None = None, seed: int = 0
    ) -> pd.DataFrame:
        """n synthetic patients in the extract's format; `where` keeps a subgroup (a condition on
        static columns), `boost` {(column, value): factor} raises subgroups' odds."""
        model = self._fitted()
        if where and boost:
            raise InputError("Give where or boost, not both.")
        if where:
            return sample_where(model, n, where, seed=seed)
        if boost:
            return sample_boosted(model, n, boost, seed=seed)
        return model.sample(n, seed=seed)

    def evaluate(self, real: pd.DataFrame, synthetic: pd.DataFrame, *, holdout: pd.DataFrame | None = None, out_dir=None):
        """The fidelity and privacy evaluation (`evaluation.evaluate`) of `synthetic` against the
        training patients `real` and, to judge honestly, real patients the model never saw."""
        from evaluation import evaluate

        model = self._fitted()
        real, synthetic, holdout = model.judged(real, synthetic, holdout, seed=0)
        return evaluate(real, synthetic, model.schema, holdout=holdout, config=self.config.evaluation, out_dir=out_dir)

    def save(self, folder: str | Path) -> Path:
        return self._fitted().save(folder)

    @classmethod
    def load(cls, folder: str | Path) -> "HealthGym":
        model = HealthGymModel.load(folder)
        hg = cls(model.schema, model.config)
        hg.model, hg.training = model, model.meta.training.summary() if model.meta.training else {}
        return hg

    def _fitted(self) -> HealthGymModel:
        if self.model is None:
            raise InputError("Call fit(df) (or HealthGym.load(folder)) before sampling, evaluating or saving.")
        return self.model
