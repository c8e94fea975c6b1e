"""What a model folder records beside its config, encoder and weights (`meta.json`), typed.

Aggregates only: the training summary (losses per check, stop reason), counts, and the fitted
value protection, id scheme, date coarsening and decoding calibration, each as its own
component's JSON. Keys this version does not know (written by another) are kept as read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from diffusion.training.loop import TrainResult

_FIELDS = {f.name for f in dataclasses.fields(TrainResult)}


@dataclass(frozen=True)
class ModelMeta:
    training: TrainResult | None = None  # the summary of the training that made the weights
    patients: int = 0  # training patients
    parameters: int = 0  # the denoiser's parameter count
    protection: dict[str, Any] | None = None  # `Protection.to_dict()`
    ids: dict[str, Any] | None = None  # `IdScheme.to_dict()`
    dating: dict[str, Any] | None = None  # `Dating.to_dict()`, for schemas with dates
    calibration: dict[str, Any] | None = None  # the decoding calibration's report (set once calibrated)
    other: dict[str, Any] = field(default_factory=dict)  # keys of other versions, as read

    @property
    def history(self) -> list[dict[str, Any]] | None:
        """The loss history of the training ([{"step", "loss", "val_loss", ...}]), if recorded."""
        return self.training.history if self.training is not None else None

    def with_calibration(self, report: dict[str, Any]) -> "ModelMeta":
        return dataclasses.replace(self, calibration=report)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.training is not None:
            out["training"] = self.training.summary()
        out.update(patients=self.patients, parameters=self.parameters)
        for key in ("protection", "ids", "dating", "calibration"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return {**out, **self.other}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ModelMeta":
        raw = dict(raw)
        training = raw.pop("training", None)
        if training is not None:  # fields another version added or dropped are left out
            training = TrainResult(**{k: v for k, v in training.items() if k in _FIELDS})
        known = {k: raw.pop(k) for k in ("patients", "parameters", "protection", "ids", "dating", "calibration") if k in raw}
        return cls(training=training, **known, other=raw)
