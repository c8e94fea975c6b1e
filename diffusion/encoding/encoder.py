"""The trajectory encoder: fit on a long extract, `encode` to [patients, channels, time],
`decode` back to a long extract. It composes the layout (`layout`), the numeric codecs
(`numeric`), patient levels (`levels`), label channels (`labels`) and the decoding parameters
calibration chose (`state.Decoding`, identity until `calibration.calibrate` sets them). Its
state is plain JSON (`state_dict` / `from_state`); numpy + pandas only.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from diffusion.data.labels import as_binary, as_labels
from diffusion.data.schema import Column, Schema
from diffusion.encoding import fit_state, repeats
from diffusion.encoding.calibration import STEPS, Report, Step, calibrate
from diffusion.encoding.frames import gaps, prepare, restore_dtypes, row_values
from diffusion.encoding.layout import (
    GAP,
    LENGTH,
    T0,
    VALID,
    Channel,
    Encoded,
    channel_layout,
    is_discrete,
    length_to_z,
    level_channel,
    repeat_channel,
    z_to_length,
)
from diffusion.encoding.levels import DeviationCoding, Deviations, patient_mean
from diffusion.encoding.marginals import quantile_level, quantile_map, smooth, spike_levels, visit_mean
from diffusion.encoding.numeric import NumberCodec
from diffusion.encoding.state import Decoding, EncoderState
from diffusion.encoding.switching import switching_decode


class TrajectoryEncoder:
    """Fit on a long extract; `encode` to tensors; `decode` tensors back to a long extract."""

    def __init__(
        self,
        schema: Schema,
        *,
        patient_levels: bool = True,
        discrete_scale: float = 0.0,
        deviations: DeviationCoding = "linear",
        k: int = 1,
        repeat_share: float = 0.0,
    ):
        self.schema = schema
        self.repeat_share = repeat_share  # numbers repeating at least this often get a repeat channel (0: none)
        self.patient_levels = patient_levels
        self.discrete_scale = discrete_scale  # 0: the root-mean-square of the numeric channels (`_matched_discrete_scale`)
        self.deviations = deviations
        self.k = k  # levels and deviation bounds: the k-th most extreme patient's, never the most extreme one's
        self._state: EncoderState | None = None
        self.decoding = Decoding()

    # -- fitting ------------------------------------------------------------------------------------
    def fit(self, df: pd.DataFrame) -> "TrajectoryEncoder":
        df = prepare(df, self.schema, warn=True)
        self.state = fit_state.fit_state(
            self.schema, df, patient_levels=self.patient_levels, deviations=self.deviations, k=self.k
        )
        self.state.repeats = repeats.chosen(df, self.schema, self.repeat_share)
        self.state.discrete_scale = self.discrete_scale if self.discrete_scale > 0 else self._matched_discrete_scale(df)
        self.decoding = Decoding()
        return self

    def _matched_discrete_scale(self, df: pd.DataFrame) -> float:
        """The root-mean-square of the encoded numeric channels within [0.1, 1] (1 without any):
        coded at +/-1, labels would outweigh numbers and the denoiser would settle them first."""
        numeric = [
            i for i, ch in enumerate(self.channels) if ch.kind not in ("valid", "length") and not is_discrete(self.schema, ch)
        ]
        if not numeric:
            return 1.0
        e = self.encode(df)
        values = np.concatenate([e.x[:, i][e.mask[:, i] > 0] for i in numeric])
        return float(np.clip(np.sqrt(np.mean(values**2)), 0.1, 1.0)) if values.size else 1.0

    @property
    def state(self) -> EncoderState:
        if self._state is None:
            raise RuntimeError("The encoder is not fitted: call fit(extract) first.")
        return self._state

    @state.setter
    def state(self, value: EncoderState) -> None:
        self._state = value
        self.__dict__.pop("channels", None)  # the layout follows the state

    # -- layout -------------------------------------------------------------------------------------
    @property
    def length(self) -> int:
        return self.state.length

    @cached_property
    def channels(self) -> list[Channel]:
        """(name, kind, column) for every channel, in tensor order."""
        return channel_layout(self.schema, set(self.levels()), self.state.time.t0_constant is None, frozenset(self.state.repeats))

    @property
    def channel_names(self) -> list[str]:
        return [c.name for c in self.channels]

    def index(self, name: str) -> int:
        return self.channel_names.index(name)

    @property
    def static_channels(self) -> list[int]:
        """Indices of channels that are constant over time within a patient."""
        static = {c.name for c in self.schema.static_columns}
        return [i for i, ch in enumerate(self.channels) if ch.kind in ("t0", "length", "level") or ch.column in static]

    @property
    def discrete_groups(self) -> list[list[int]]:
        """The discrete channels as groups of indices: a categorical column's one-hot channels
        together, every binary, missingness and repeat channel alone."""
        groups: dict[str, list[int]] = {}
        for i, ch in enumerate(self.channels):
            if is_discrete(self.schema, ch):
                groups.setdefault(f"{ch.column}=" if ch.kind == "onehot" else ch.name, []).append(i)
        return list(groups.values())

    @property
    def clip_bounds(self) -> list[float]:
        """Per channel, the largest |value| an x0 estimate may take during sampling."""
        levels = set(self.levels())
        return [
            self.deviations_of(ch.column).bound
            if ch.kind in ("value", "gap") and ch.column in levels
            else self.state.discrete_scale
            if is_discrete(self.schema, ch)
            else 1.0
            for ch in self.channels
        ]

    def levels(self) -> list[str]:
        """The numbers split into a patient level + a deviation (see `fit_state.split_numbers`)."""
        return fit_state.split_numbers(self.schema, self.state.patient_levels)

    def numbers(self) -> list[str]:
        """Everything decoded through a codec: the first time (when it varies), the gap
        (irregular schemas) and each numeric column."""
        out = [] if self.state.time.t0_constant is not None else [T0]
        out += [] if self.schema.regular else [GAP]
        return out + [c.name for c in self.schema.columns if c.numeric]

    def codec(self, name: str) -> NumberCodec:
        t = self.state.time
        codec = t.gap if name == GAP else t.t0 if name == T0 else self.state.columns[name].number
        assert codec is not None
        return codec

    def deviations_of(self, name: str) -> Deviations:
        dev = self.state.time.gap_deviations if name == GAP else self.state.columns[name].deviations
        assert dev is not None
        return dev

    def temporal_discrete(self) -> list[Column]:
        """Temporal binary and categorical columns (decoded per visit with a switching penalty)."""
        return [c for c in self.schema.columns if not c.static and not c.numeric]

    @property
    def calibratable(self) -> bool:
        """Whether calibration has anything to set: a nullable column, a temporal label or a number."""
        return bool(any(c.nullable for c in self.schema.columns) or self.temporal_discrete() or self.numbers())

    # -- encode -------------------------------------------------------------------------------------
    def encode(self, df: pd.DataFrame) -> Encoded:
        """A long frame as tensors [n, C, L] with their mask and each patient's visits (beyond the fitted length cut)."""
        df = prepare(df, self.schema, warn=False)
        df = df[df.groupby(self.schema.id, sort=False).cumcount() < self.state.length]
        rows = _Rows(df, self.schema.id, len(self.channels), self.state.length)
        levels = set(self.levels())
        for ch, (name, kind, colname) in enumerate(self.channels):
            if kind == "repeat":
                self._encode_repeat(rows, ch, colname)
            elif kind in ("valid", "length", "level", "gap", "t0") or (kind == "value" and colname in levels):
                self._encode_structure(rows, ch, kind, colname, colname in levels)
            else:
                self._encode_column(rows, ch, name, kind, colname)
        return Encoded(x=rows.x, mask=rows.mask, lengths=rows.lengths.astype(np.int64))

    def _encode_structure(self, rows: "_Rows", ch: int, kind: str, colname: str, leveled: bool) -> None:
        """Channels of the sequence itself: visits, length, levels, deviations from them, gaps, first time."""
        schema, L = self.schema, self.state.length
        if kind == "valid":
            rows.fill(ch, np.where(np.arange(L)[None, :] < rows.lengths[:, None], 1.0, -1.0))
        elif kind == "length":
            rows.fill(ch, length_to_z(rows.lengths, L)[:, None])
        elif kind == "level":
            _, ok, level = rows.scaled(schema, colname, self.codec(colname))
            has = np.bincount(rows.pid, weights=ok.astype(float), minlength=rows.n) > 0
            rows.x[:, ch, :] = np.where(has, self.deviations_of(colname).level_channel(level), 0.0)[:, None]
            rows.mask[:, ch, :] = has[:, None]
        elif leveled:  # a value or gap as a deviation from the patient's level
            z, ok, level = rows.scaled(schema, colname, self.codec(colname))
            dev = self.deviations_of(colname)
            rows.put(ch, dev.to_channel((z - level[rows.pid]) / dev.scale), ok, static=False)
        elif kind == "gap":
            rows.put(ch, self.codec(GAP).scale(np.maximum(gaps(rows.df, schema), 1e-12)), rows.pos > 0, static=False)
        else:  # t0
            t0 = self.codec(T0).scale(rows.df[schema.time].to_numpy(dtype=np.float64))
            rows.put(ch, t0, np.ones(len(rows.df), bool), static=True)

    def _encode_repeat(self, rows: "_Rows", ch: int, name: str) -> None:
        """+/- discrete scale: the visit repeats (or not) the previous visit's value; known where both are recorded."""
        same, known = repeats.same_as_previous(*row_values(rows.df, self.schema, name), rows.pos == 0)
        rows.put(ch, np.where(same, 1.0, -1.0) * self.state.discrete_scale, known, static=False)

    def _encode_column(self, rows: "_Rows", ch: int, name: str, kind: str, colname: str) -> None:
        """A column's channel: its missingness, its scaled number, its binary value or one category's indicator."""
        col, series = self.schema.column(colname), rows.df[colname]
        static, ds = col.static, self.state.discrete_scale
        if kind == "missing":
            rows.put(ch, np.where(series.isna().to_numpy(), 1.0, -1.0) * ds, np.ones(len(series), bool), static)
        elif col.numeric:
            codec = self.codec(colname)
            v = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
            ok = np.isfinite(v)
            rows.put(ch, codec.scale(np.where(ok, v, codec.vmin)), ok, static)
        elif col.type == "binary":
            b = as_binary(series).to_numpy()
            ok = ~np.isnan(b)
            rows.put(ch, np.where(ok, 2.0 * np.nan_to_num(b) - 1.0, 0.0) * ds, ok, static)
        else:
            labels = as_labels(series)
            rows.put(ch, np.where(labels.to_numpy() == name.split("=", 1)[1], 1.0, -1.0) * ds, labels.notna().to_numpy(), static)

    # -- decode pieces (calibration evaluates candidate decodings through them) ----------------------
    def valid(self, x: np.ndarray) -> np.ndarray:
        """[n, L]: each patient's visits (the length channel read back), padding False."""
        lengths = z_to_length(x[:, self.index(LENGTH), :].mean(axis=1), self.length)
        return np.arange(x.shape[2])[None, :] < lengths[:, None]

    def recorded(self, x: np.ndarray, col: Column, valid: np.ndarray, decoding: Decoding) -> np.ndarray:
        """[n, L]: visits where the column decodes to a value (not padding, not missing)."""
        if not col.nullable:
            return valid
        return valid & (x[:, self.index(f"{col.name}__missing"), :] <= decoding.missing_threshold.get(col.name, 0.0))

    def raw_deviation(self, x: np.ndarray, name: str) -> np.ndarray:
        """A split number's deviation channel [n, L], read as a scaled deviation / scale."""
        return self.deviations_of(name).from_channel(x[:, self.index(name), :])

    def scaled(self, x: np.ndarray, name: str, valid: np.ndarray, decoding: Decoding) -> np.ndarray:
        """The scaled value a number decodes from, before its values' map: [n] for a static one
        (the patient's mean over its visits), else [n, L]; a split number is level + deviation,
        the deviation smoothed and mapped onto the real deviations as `decoding` says."""
        if name == T0 or (name != GAP and self.schema.column(name).static):
            return visit_mean(x[:, self.index(name), :], valid)
        if name not in self.levels():
            return x[:, self.index(name), :]
        dev, how = self.deviations_of(name), decoding.number(name)
        level = dev.level_value(visit_mean(x[:, self.index(level_channel(name)), :], valid))[:, None]
        d = smooth(self.raw_deviation(x, name), valid, how.smoothing)
        if how.generated_deviation_quantiles is not None and dev.quantiles is not None:
            d = quantile_map(d, how.generated_deviation_quantiles, dev.quantiles)
        return level + d * dev.scale

    def spikes(self, x: np.ndarray, name: str, valid: np.ndarray, decoding: Decoding) -> tuple[np.ndarray, float] | None:
        """A split temporal column's spike levels and share (`marginals.spike_levels`); None
        where `decoding` makes none."""
        how = decoding.number(name)
        if how.spike_sign is None or name not in self.levels() or name == GAP:
            return None
        recorded = self.recorded(x, self.schema.column(name), valid, decoding)
        return spike_levels(self.raw_deviation(x, name), valid, recorded, how.spike_sign, how.spike_share)

    def decoded_z(self, x: np.ndarray, name: str, valid: np.ndarray, decoding: Decoding) -> np.ndarray:
        """`scaled`, mapped onto the real marginal where `decoding` says; with spikes, a share u of
        the visits takes the real marginal's outer u and the other visits the rest."""
        codec, how = self.codec(name), decoding.number(name)
        z = self.scaled(x, name, valid, decoding)
        if how.generated_quantiles is None or codec.quantiles is None:
            return z
        spikes = self.spikes(x, name, valid, decoding)
        if spikes is None:
            return quantile_map(z, how.generated_quantiles, codec.quantiles)
        (spike, u), real = spikes, np.asarray(codec.quantiles, dtype=np.float64)
        base = quantile_level(z, how.generated_quantiles)
        level = np.where(np.isnan(spike), (1.0 - u) * base if how.spike_sign > 0 else u + (1.0 - u) * base, spike)
        return np.interp(level, np.linspace(0.0, 1.0, real.size), real)

    def unscale(self, z: np.ndarray, name: str) -> np.ndarray:
        col = None if name in (T0, GAP) else self.schema.column(name)
        return self.codec(name).unscale(z, None if col is None else col.min, None if col is None else col.max)

    def repeated(self, x: np.ndarray, name: str, values: np.ndarray, recorded: np.ndarray) -> np.ndarray:
        """[n, L] decoded values with the visits whose repeat channel is set carrying the previous value."""
        return repeats.carry_forward(values, x[:, self.index(repeat_channel(name)), :] > 0, recorded)

    def label_channels(self, col: Column) -> list[int]:
        """A binary's channel (scored -v, +v) or a categorical's one-hot channels, in label order."""
        if col.type == "binary":
            return [self.index(col.name)]
        return [self.index(f"{col.name}={c}") for c in col.categories or ()]

    def temporal_codes(self, x: np.ndarray, col: Column, recorded: np.ndarray, penalty: float) -> np.ndarray:
        """Label codes [n, L] of a temporal binary / categorical at its recorded visits."""
        chans = self.label_channels(col)
        scores = np.stack([-x[:, chans[0], :], x[:, chans[0], :]], axis=1) if col.type == "binary" else x[:, chans, :]
        return switching_decode(scores, recorded, penalty)

    # -- decode -------------------------------------------------------------------------------------
    def decode(self, x: np.ndarray, *, first_id: int = 1, decoding: Decoding | None = None) -> pd.DataFrame:
        """[patients, channels, time] -> long extract with fresh ids first_id, first_id+1, ...;
        decoded as `decoding` says (the encoder's own, calibrated one by default)."""
        dec = self.decoding if decoding is None else decoding
        state, schema = self.state, self.schema
        x = np.asarray(x, dtype=np.float64)
        n = x.shape[0]
        valid = self.valid(x)
        pid, pos = np.nonzero(valid)  # row-major: patient by patient, visits in order
        static_cols = {c.name for c in schema.static_columns}

        def channel(ch: int, static: bool) -> np.ndarray:
            return visit_mean(x[:, ch, :], valid)[pid] if static else x[pid, ch, pos]

        ids = np.arange(first_id, first_id + n)
        out: dict[str, np.ndarray] = {
            schema.id: ids[pid] if state.id_integer else np.array([f"syn-{i:06d}" for i in ids], dtype=object)[pid]
        }
        t = state.time
        start = np.full(n, t.t0_constant) if t.t0_constant is not None else self.unscale(self.decoded_z(x, T0, valid, dec), T0)
        if schema.regular:
            times = start[pid] + pos
        else:
            g = np.maximum(
                self.unscale(self.decoded_z(x, GAP, valid, dec), GAP), 1.0 if t.integer else max(self.codec(GAP).vmin, 1e-9)
            )
            g[:, 0] = 0.0
            if GAP in state.repeats:  # whole gaps, so a repeated gap stays equal once times are rounded
                g = self.repeated(x, GAP, np.round(g) if t.integer else g, valid & (np.arange(x.shape[2]) > 0)[None, :])
            times = (start[:, None] + np.cumsum(g, axis=1))[pid, pos]
        out[schema.time] = np.round(times) if t.integer else times
        for col in schema.columns:
            static = col.name in static_cols
            if col.numeric and col.name in state.repeats:
                grid = self.unscale(self.decoded_z(x, col.name, valid, dec), col.name)
                values = self.repeated(x, col.name, grid, self.recorded(x, col, valid, dec))[pid, pos]
            elif col.numeric:
                z = self.decoded_z(x, col.name, valid, dec)
                values = self.unscale(z[pid] if static else z[pid, pos], col.name)
            else:
                if static:  # the best-scoring label over the patient's visits
                    scores = np.stack([visit_mean(x[:, i, :], valid)[pid] for i in self.label_channels(col)], axis=1)
                    codes = (scores[:, 0] > 0).astype(np.int64) if col.type == "binary" else scores.argmax(axis=1)
                else:
                    penalty = dec.switch_penalty.get(col.name, 0.0)
                    codes = self.temporal_codes(x, col, self.recorded(x, col, valid, dec), penalty)[pid, pos]
                labels = ["0", "1"] if col.type == "binary" else list(col.categories or ())
                spelled = state.columns[col.name].labels or {}
                values = np.array(
                    [spelled.get(labels[k], int(labels[k]) if col.type == "binary" else labels[k]) for k in codes], dtype=object
                )
            if col.nullable:
                missing = channel(self.index(f"{col.name}__missing"), static) > dec.missing_threshold.get(col.name, 0.0)
                values = np.where(missing, None, values.astype(object))
            out[col.name] = values
        return restore_dtypes(pd.DataFrame(out), state, schema)

    def calibrate(self, x: np.ndarray, steps: tuple[Step, ...] = STEPS) -> Report:
        """Calibrate decoding on generated patients x (`calibration.calibrate`); the chosen
        parameters replace the encoder's decoding in one assignment. Returns the report."""
        self.decoding, report = calibrate(self, x, steps)
        return report

    # -- sampling support ----------------------------------------------------------------------------
    def draw_lengths(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n visit counts drawn from the training patients' (pooled) length distribution."""
        counts = self.state.length_counts
        p = np.array(list(counts.values()), dtype=float)
        return rng.choice(np.array([int(k) for k in counts]), size=n, p=p / p.sum())

    def known_channels(self, lengths: np.ndarray) -> tuple[list[int], np.ndarray]:
        """(channel indices, values [n, 2, L]) of the validity and length channels for given lengths."""
        L = self.length
        valid = np.where(np.arange(L)[None, :] < lengths[:, None], 1.0, -1.0)
        z = np.repeat(length_to_z(lengths, L)[:, None], L, axis=1)
        return [self.index(VALID), self.index(LENGTH)], np.stack([valid, z], axis=1).astype(np.float32)

    # -- (de)serialisation ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The fitted state and decoding parameters, plain JSON (the current format)."""
        return self.state.to_dict(self.decoding)

    @classmethod
    def from_state(cls, schema: Schema, raw: dict) -> "TrajectoryEncoder":
        """An encoder from `state_dict` output of the current format (older: `diffusion.bundle.upgrade`)."""
        state, decoding = EncoderState.from_dict(raw)
        enc = cls(schema, patient_levels=state.patient_levels, discrete_scale=state.discrete_scale)
        enc.state, enc.decoding = state, decoding
        return enc


class _Rows:
    """A long frame's rows placed in the [n, C, L] tensors being encoded (patient, visit position)."""

    def __init__(self, df: pd.DataFrame, id_col: str, channels: int, length: int):
        self.df = df
        self.pid, _ = pd.factorize(df[id_col], sort=False)
        self.pos = df.groupby(id_col, sort=False).cumcount().to_numpy()
        self.n = int(self.pid.max()) + 1 if len(self.pid) else 0
        self.lengths = np.bincount(self.pid, minlength=self.n)
        self.first_rows = np.flatnonzero(self.pos == 0)
        self.x = np.zeros((self.n, channels, length), dtype=np.float32)
        self.mask = np.zeros_like(self.x)
        self._scaled: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def scaled(self, schema: Schema, name: str, codec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Once per number: scaled values per row, presence, each patient's level."""
        if name not in self._scaled:
            z, ok = fit_state.scaled_rows(self.df, schema, name, codec)
            self._scaled[name] = (z, ok, patient_mean(z, ok, self.pid))
        return self._scaled[name]

    def fill(self, ch: int, values: np.ndarray) -> None:
        """Channel ch from per-patient values ([n, 1] or [n, L]), present everywhere."""
        self.x[:, ch, :], self.mask[:, ch, :] = values, 1.0

    def put(self, ch: int, values: np.ndarray, present: np.ndarray, static: bool) -> None:
        """Write row values (temporal) or first-row values (static) into channel ch."""
        values = np.where(present, values, 0.0)
        if static:
            self.x[:, ch, :] = values[self.first_rows][:, None]
            self.mask[:, ch, :] = present[self.first_rows][:, None]
        else:
            self.x[self.pid, ch, self.pos] = values
            self.mask[self.pid, ch, self.pos] = present
