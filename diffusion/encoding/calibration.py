"""Decoding calibration: a pure step from generated patients to frozen decoding parameters.

`calibrate(encoder, x)` reads generated patients x [n, channels, time] and the encoder's fit-time
aggregates, and returns a `Decoding` (and a report) without changing the encoder:

- missingness: each nullable column's threshold, so the decoded missing rate is the real one;
- values: each number's generated marginal mapped onto the real percentiles (monotone);
- deviations: a split number's visit deviations mapped onto the real deviations;
- smoothing: the smallest deviation smoothing at which consecutive recorded visits correlate, by
  rank, at least as in the training patients;
- spikes: the smallest share of the most isolated visits that decode as spikes at which the
  Pearson lag-1 comes down to the training patients';
- persistence: each temporal label's smallest switching penalty at which decoded labels stay
  put at least as often as in the training patients.

`steps` chooses which of these run (all by default), so each one's worth can be measured.
The searches bisect; one that reaches its cap without meeting its target logs a warning.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Callable, Literal

import numpy as np

from diffusion.data import lagstats
from diffusion.encoding.layout import GAP, T0
from diffusion.encoding.marginals import has_neighbour, ks_to_knots, smooth, spike_levels, visit_mean
from diffusion.encoding.numeric import marginal_knots
from diffusion.encoding.state import Decoding

log = logging.getLogger(__name__)

Step = Literal["missingness", "values", "deviations", "smoothing", "spikes", "persistence"]
STEPS: tuple[Step, ...] = ("missingness", "values", "deviations", "smoothing", "spikes", "persistence")
MAX_SMOOTHING = 0.9  # the strongest smoothing: weights 0.9^|visits apart|
MAX_SPIKES = 0.01  # the largest share of recorded visits that may decode as spikes
MAX_PENALTY = 4.0  # switching penalty cap, in discrete scales: outweighs any single visit's score gap (at most 2)
Report = dict[str, dict[str, dict[str, float]]]


def smallest(ok: Callable[[float], bool], hi: float, steps: int, what: str) -> float:
    """The smallest x in (0, hi] at which ok(x) holds, to within hi / 2**steps (ok false below
    some x, true above); hi, with a warning, when ok(hi) fails too."""
    lo = 0.0
    if not ok(hi):
        log.warning("Calibration: %s reached its cap %.4g without meeting its target.", what, hi)
        return hi
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def calibrate(encoder: Any, x: np.ndarray, steps: tuple[Step, ...] = STEPS) -> tuple[Decoding, Report]:
    """Decoding parameters for `encoder` (a fitted `TrajectoryEncoder`) from generated patients x."""
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise ValueError(f"unknown calibration step(s) {sorted(unknown)} (known: {list(STEPS)})")
    x = np.asarray(x, dtype=np.float64)
    dec, report = Decoding(), {}
    if "missingness" in steps:
        dec, report["missing"] = _missingness(encoder, x, dec)
    dec, report["marginals"] = _marginals(encoder, x, dec, steps)
    if "persistence" in steps:
        dec, report["persistence"] = _persistence(encoder, x, dec)
    return dec, report


def _missingness(enc: Any, x: np.ndarray, dec: Decoding) -> tuple[Decoding, dict]:
    """Thresholds: the quantile of each missingness channel that leaves the real missing rate above it."""
    valid = enc.valid(x)
    thresholds, report = {}, {}
    for col in enc.schema.columns:
        rate = enc.state.columns[col.name].missing_rate
        if not col.nullable or rate is None or not valid.any():
            continue
        ch = x[:, enc.index(f"{col.name}__missing"), :]
        values = visit_mean(ch, valid) if col.static else ch[valid]
        # inside the codes: where the quantile is a code itself (codes drawn, not regressed), a threshold
        # at it would flip every visit at that code; inside, they stay as drawn
        bound = enc.state.discrete_scale * (1 - 1e-6)
        thresholds[col.name] = threshold = float(np.clip(np.quantile(values, 1.0 - rate), -bound, bound))
        report[col.name] = {
            "real": rate,
            "before": float((values > 0.0).mean()),
            "after": float((values > threshold).mean()),
            "threshold": threshold / enc.state.discrete_scale,
        }
    return replace(dec, missing_threshold=thresholds), report


def _kept_visits(enc: Any, x: np.ndarray, name: str, valid: np.ndarray, dec: Decoding) -> np.ndarray:
    """Where a number decodes to a value: per patient for static ones and the first time, visits
    after the first for the gap, recorded visits otherwise."""
    col = None if name in (T0, GAP) else enc.schema.column(name)
    if name == T0 or (col is not None and col.static):
        keep = np.ones(len(x), bool)
        if col is not None and col.nullable:
            missing = visit_mean(x[:, enc.index(f"{name}__missing"), :], valid)
            keep = missing <= dec.missing_threshold.get(name, 0.0)
        return keep
    if col is None:
        keep = valid.copy()
        keep[:, 0] = False
        return keep
    return enc.recorded(x, col, valid, dec)


def _values_map(
    enc: Any, x: np.ndarray, name: str, valid: np.ndarray, keep: np.ndarray, dec: Decoding, steps: tuple[Step, ...]
) -> tuple[Decoding, np.ndarray]:
    """The values' map from the values at the kept visits (spikes aside); returns those values."""
    z = enc.scaled(x, name, valid, dec)
    spikes = enc.spikes(x, name, valid, dec)
    values = z[keep] if spikes is None else z[keep & np.isnan(spikes[0])]
    if "values" in steps:
        dec = dec.with_number(name, generated_quantiles=marginal_knots(values))
    return dec, values


def _marginals(enc: Any, x: np.ndarray, dec: Decoding, steps: tuple[Step, ...]) -> tuple[Decoding, dict]:
    valid = enc.valid(x)
    levels = set(enc.levels())
    report: dict[str, dict[str, float]] = {}
    for name in enc.numbers():
        if enc.codec(name).quantiles is None:  # no values at fit
            continue
        keep = _kept_visits(enc, x, name, valid, dec)
        if not keep.any():
            continue
        if name in levels and enc.deviations_of(name).quantiles is not None:
            dec, report[name] = _deviations(enc, x, name, valid, keep, dec, steps)
        dec, values = _values_map(enc, x, name, valid, keep, dec, steps)
        report.setdefault(name, {})["ks_before"] = ks_to_knots(values, enc.codec(name).quantiles)
    return dec, report


def _deviations(
    enc: Any, x: np.ndarray, name: str, valid: np.ndarray, keep: np.ndarray, dec: Decoding, steps: tuple[Step, ...]
) -> tuple[Decoding, dict[str, float]]:
    """Smoothing, the deviations' map and spikes of one split number (see the module docstring).
    Every candidate is a new frozen Decoding; the bisections compare candidates, nothing is mutated."""
    entry = None if name == GAP else enc.state.columns[name]
    rank = None if entry is None else entry.lag1_rank
    pearson = None if entry is None else entry.lag1
    raw = enc.raw_deviation(x, name)
    report = {"deviation_ks_before": ks_to_knots(raw[keep], enc.deviations_of(name).quantiles)}
    base = dec.with_number(name, smoothing=0.0, spike_sign=None, spike_share=0.0)

    def smoothed(phi: float) -> Decoding:
        """Smoothed by phi, the deviations mapped onto the real ones."""
        d = base.with_number(name, smoothing=phi)
        if "deviations" in steps:
            d = d.with_number(name, generated_deviation_quantiles=marginal_knots(smooth(raw, valid, phi)[keep]))
        return _values_map(enc, x, name, valid, keep, d, steps)[0]

    def rank_lag1(d: Decoding) -> float:
        return lagstats.lag1_grid(enc.decoded_z(x, name, valid, d), keep, rank=True)

    def pearson_lag1(d: Decoding) -> float:
        return lagstats.lag1_grid(enc.unscale(enc.decoded_z(x, name, valid, d), name), keep)

    dec = smoothed(0.0)
    rank_before = rank_lag1(dec)
    if "smoothing" in steps and rank is not None and np.isfinite(rank_before) and rank_before < rank:
        dec = smoothed(smallest(lambda p: rank_lag1(smoothed(p)) >= rank, MAX_SMOOTHING, 12, f"{name} smoothing"))
    spiking: dict = {}
    if "spikes" in steps and "values" in steps and pearson is not None:
        dec, spiking = _spikes(enc, x, name, valid, keep, dec, steps, raw, pearson, pearson_lag1)
    if rank is not None:
        after = dict(lag1_rank_after=rank_lag1(dec), smoothing=dec.number(name).smoothing)
        report.update(lag1_rank_real=rank, lag1_rank_before=rank_before, **after)
    report.update(spiking)
    return dec, report


def _spikes(enc, x, name, valid, keep, dec: Decoding, steps, raw, pearson: float, pearson_lag1) -> tuple[Decoding, dict]:
    """The smallest share of the most departing recorded visits made spikes at which the Pearson
    lag-1 falls to the real one (none when it is not above it)."""
    real = enc.deviations_of(name).quantiles
    sign = (
        1.0 if real[-1] - real[len(real) // 2] >= real[len(real) // 2] - real[0] else -1.0
    )  # the side real deviations reach furthest
    start = dec

    def spiked(q: float) -> Decoding:
        d = start.with_number(name, spike_sign=None, spike_share=0.0)
        if q > 0:
            levels, share = spike_levels(raw, valid, keep, sign, q)
            if share > 0 and (keep & np.isnan(levels)).any():
                d = d.with_number(name, spike_sign=sign, spike_share=share)
        return _values_map(enc, x, name, valid, keep, d, steps)[0]

    dec = spiked(0.0)
    pearson_before = pearson_lag1(dec)
    candidates = keep & has_neighbour(valid)  # a patient's only visit departs from nothing
    if np.isfinite(pearson_before) and pearson_before > pearson and candidates.sum() * 2 > keep.sum():
        dec = spiked(smallest(lambda q: pearson_lag1(spiked(q)) <= pearson, MAX_SPIKES, 12, f"{name} spike share"))
    report = dict(
        lag1_real=pearson, lag1_before=pearson_before, spikes=dec.number(name).spike_share, lag1_after=pearson_lag1(dec)
    )
    return dec, report


def _persistence(enc: Any, x: np.ndarray, dec: Decoding) -> tuple[Decoding, dict]:
    """Switching penalties: the smallest at which decoded labels stay put as often as the real ones."""
    valid = enc.valid(x)
    ds = enc.state.discrete_scale
    penalties, report = {}, {}
    for col in enc.temporal_discrete():
        target = enc.state.columns[col.name].stay
        if target is None:
            continue
        recorded = enc.recorded(x, col, valid, dec)

        def stay(p: float) -> float:
            return lagstats.stay_grid(enc.temporal_codes(x, col, recorded, p), recorded)

        before = stay(0.0)
        if not np.isfinite(before):  # no patient with two recorded visits in a row
            continue
        penalty = (
            smallest(lambda p: stay(p) >= target, MAX_PENALTY * ds, 20, f"{col.name} switching penalty")
            if before < target
            else 0.0
        )
        penalties[col.name] = penalty
        report[col.name] = {"real": target, "before": before, "after": stay(penalty), "penalty": penalty / ds}
    return replace(dec, switch_penalty=penalties), report
