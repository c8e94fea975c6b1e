"""The model folder: fit one from an extract (`fit`), save / load / upgrade it (`folder`, `upgrade`),
sample from it (conditionally too: `conditional`) and write releases (`release`).
"""


def __getattr__(name: str):
    # `diffusion.bundle.HealthGymModel` is the name registered MLflow models load; imported lazily so
    # that release writing does not import torch
    if name == "HealthGymModel":
        from diffusion.bundle.folder import HealthGymModel

        return HealthGymModel
    raise AttributeError(name)
