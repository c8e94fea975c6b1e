"""The MLflow pyfunc model of a Health Gym model, logged from code (no cloudpickle).

This file is the model's code: `tasks.registry` logs it as `python_model` (MLflow's models from
code), with the model folder as the artifact `model_dir` and the `diffusion` library as a code
path, so a serving environment needs the pinned packages, not Health Gym itself. A request is a
one-row frame: `patients` (how many), `seed` (optional) and `where` (optional, a condition on
static columns); the answer is synthetic patients in the extract's format:

    mlflow.pyfunc.load_model("models:/pbc@champion").predict(pd.DataFrame({"patients": [50], "seed": [0]}))
"""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc
import pandas as pd


class HealthGymPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from diffusion.bundle.folder import HealthGymModel

        self.model = HealthGymModel.load(context.artifacts["model_dir"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        row = model_input.iloc[0] if len(model_input) else pd.Series(dtype=object)
        n = int(row.get("patients", 100))
        seed = 0 if pd.isna(row.get("seed", 0)) else int(row.get("seed", 0))
        where = row.get("where")
        if isinstance(where, str) and where.strip():
            from diffusion.bundle.conditional import sample_where

            return sample_where(self.model, n, where, seed=seed)
        return self.model.sample(n, seed=seed)


mlflow.models.set_model(HealthGymPyfunc())  # read by MLflow when it loads this file as the model
