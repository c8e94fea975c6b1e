"""The MLflow pyfunc flavour of a Health Gym model: the model folder rides along as an artifact.

`mlflow.pyfunc.load_model("models:/pbc@champion").predict(pd.DataFrame({"patients": [50], "seed": [0]}))`
returns synthetic patients in the extract's format.
"""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd


class HealthGymPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from diffusion.bundle import HealthGymModel

        self.model = HealthGymModel.load(context.artifacts["model_dir"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        row = model_input.iloc[0] if len(model_input) else {}
        n = int(row.get("patients", 100))
        seed = int(row.get("seed", 0))
        return self.model.sample(n, seed=seed)
