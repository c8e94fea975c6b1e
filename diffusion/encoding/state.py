"""The encoder's fitted state and its decoding parameters, typed, and their JSON form.

`EncoderState` holds what `TrajectoryEncoder.fit` learns from the training patients: per column
its codec (numbers), deviations (temporal numbers with patient levels), label spellings, missing
rate and persistence aggregates; the time codecs; the layout sizes. `Decoding` holds what
calibration chooses on generated patients (`diffusion.encoding.calibration`); the identity
`Decoding()` decodes plainly. Both are aggregates of many patients only. `to_dict` writes the
current model-folder format (`FORMAT`); older folders are converted by `diffusion.bundle.upgrade`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from diffusion.encoding.levels import Deviations
from diffusion.encoding.numeric import NumberCodec

FORMAT = 2  # encoder.json's layout; `diffusion.bundle.upgrade` converts older ones


def _codec(raw: dict[str, Any] | None) -> NumberCodec | None:
    return None if raw is None else NumberCodec.from_dict(raw)


def _deviations(raw: dict[str, Any] | None) -> Deviations | None:
    return None if raw is None else Deviations.from_dict(raw)


def _tuple(raw: Any) -> tuple[float, ...] | None:
    return None if raw is None else tuple(float(v) for v in raw)


@dataclass
class ColumnState:
    dtype: str
    missing_rate: float | None = None  # share of visits (patients, if static) without a value; nullable columns
    number: NumberCodec | None = None
    deviations: Deviations | None = None  # temporal numbers with patient levels
    labels: dict[str, Any] | None = None  # label -> the extract's spelling (binary and categorical)
    lag1_rank: float | None = None  # temporal numbers (`diffusion.data.lagstats`)
    lag1: float | None = None
    stay: float | None = None  # temporal labels

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["number"] = None if self.number is None else self.number.to_dict()
        out["deviations"] = None if self.deviations is None else self.deviations.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ColumnState":
        return cls(**{**raw, "number": _codec(raw.get("number")), "deviations": _deviations(raw.get("deviations"))})


@dataclass
class TimeState:
    dtype: str
    integer: bool
    t0_constant: float | None  # every patient's first time, when they all share it
    t0: NumberCodec | None = None  # the first time's codec, when it varies
    gap: NumberCodec | None = None  # irregular schemas: the gap since the previous visit
    gap_deviations: Deviations | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "integer": self.integer,
            "t0_constant": self.t0_constant,
            "t0": None if self.t0 is None else self.t0.to_dict(),
            "gap": None if self.gap is None else self.gap.to_dict(),
            "gap_deviations": None if self.gap_deviations is None else self.gap_deviations.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TimeState":
        return cls(
            raw["dtype"],
            bool(raw["integer"]),
            raw["t0_constant"],
            _codec(raw.get("t0")),
            _codec(raw.get("gap")),
            _deviations(raw.get("gap_deviations")),
        )


@dataclass(frozen=True)
class NumberDecoding:
    """How one number decodes beyond its codec (all off by default)."""

    generated_quantiles: tuple[float, ...] | None = None  # the values' map: generated -> real percentiles
    generated_deviation_quantiles: tuple[float, ...] | None = None  # the deviations' map
    smoothing: float = 0.0  # deviation smoothing weight per visit apart
    spike_sign: float | None = None  # isolated spikes: towards which side, and what share of visits
    spike_share: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "NumberDecoding":
        return cls(
            _tuple(raw.get("generated_quantiles")),
            _tuple(raw.get("generated_deviation_quantiles")),
            float(raw.get("smoothing", 0.0)),
            raw.get("spike_sign"),
            float(raw.get("spike_share", 0.0)),
        )


@dataclass(frozen=True)
class Decoding:
    """Decoding parameters chosen by calibration; empty is plain decoding (signs, argmax, identity maps)."""

    missing_threshold: dict[str, float] = field(default_factory=dict)
    numbers: dict[str, NumberDecoding] = field(default_factory=dict)
    switch_penalty: dict[str, float] = field(default_factory=dict)

    def number(self, name: str) -> NumberDecoding:
        return self.numbers.get(name, NumberDecoding())

    def with_number(self, name: str, **changes: Any) -> "Decoding":
        return replace(self, numbers={**self.numbers, name: replace(self.number(name), **changes)})

    def to_dict(self) -> dict[str, Any]:
        return {
            "missing_threshold": dict(self.missing_threshold),
            "switch_penalty": dict(self.switch_penalty),
            "numbers": {k: v.to_dict() for k, v in self.numbers.items()},
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "Decoding":
        raw = raw or {}
        return cls(
            dict(raw.get("missing_threshold", {})),
            {k: NumberDecoding.from_dict(v) for k, v in raw.get("numbers", {}).items()},
            dict(raw.get("switch_penalty", {})),
        )


@dataclass
class EncoderState:
    length: int  # time steps of the tensor: the longest (cut) patient
    length_counts: dict[str, float]  # patients per visit count, pooled to >= k
    columns: dict[str, ColumnState]
    time: TimeState
    id_integer: bool
    id_dtype: str
    column_order: list[str]
    patient_levels: bool
    discrete_scale: float
    # temporal numbers (and the gap) with a repeat channel: their value often equals the previous visit's
    repeats: list[str] = field(default_factory=list)

    def to_dict(self, decoding: Decoding) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "length": self.length,
            "length_counts": self.length_counts,
            "columns": {k: v.to_dict() for k, v in self.columns.items()},
            "time": self.time.to_dict(),
            "id_integer": self.id_integer,
            "id_dtype": self.id_dtype,
            "column_order": list(self.column_order),
            "patient_levels": self.patient_levels,
            "discrete_scale": self.discrete_scale,
            "repeats": list(self.repeats),
            "decoding": decoding.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> tuple["EncoderState", Decoding]:
        if raw.get("format") != FORMAT:
            raise ValueError(
                f"encoder state of format {raw.get('format')!r}, expected {FORMAT}: convert it with diffusion.bundle.upgrade"
            )
        state = cls(
            int(raw["length"]),
            dict(raw["length_counts"]),
            {k: ColumnState.from_dict(v) for k, v in raw["columns"].items()},
            TimeState.from_dict(raw["time"]),
            bool(raw["id_integer"]),
            str(raw["id_dtype"]),
            list(raw["column_order"]),
            bool(raw["patient_levels"]),
            float(raw["discrete_scale"]),
            list(raw.get("repeats", [])),  # states saved before repeat channels have none
        )
        return state, Decoding.from_dict(raw.get("decoding"))
