"""Dates and datetimes at the pipeline's edges: read as numbers for the engine, written back as dates.

A schema may declare its time column as dates (`time: {column: visit_date, unit: day}`) and
static columns of `type: date` (a birth or diagnosis date). On the way in, `to_numbers` turns
them into numbers: the time column into `unit`s since 1970-01-01, date columns into days since
then, so the engine sees the numeric schema `numeric_schema` gives (date columns as static
reals) and models the gaps between visits in the declared unit. On the way out, `Dating`
(fitted on the training patients) writes numbers back as dates, coarsened so that no released
date belongs to fewer than k real patients: each patient's first visit and each date column
take the start of a bin of consecutive calendar cells (hours, days, weeks, months or years)
holding at least k training patients, and a patient's later visits keep their gaps from the
first. The grid and the bin starts (calendar points) are the only state kept.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from diffusion.data.schema import Column, Schema

UNITS: dict[str, pd.Timedelta] = {
    "second": pd.Timedelta(seconds=1),
    "minute": pd.Timedelta(minutes=1),
    "hour": pd.Timedelta(hours=1),
    "day": pd.Timedelta(days=1),
    "week": pd.Timedelta(weeks=1),
}
EPOCH = pd.Timestamp("1970-01-01")
Format = Literal["date", "datetime", "timestamp"]  # ISO date text, ISO datetime text, datetime64 values


def parse(series: pd.Series) -> pd.Series:
    """Datetimes (naive, UTC) of a column of ISO strings or datetime values; NaT where missing or unparsable."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_any_dtype(series):
        return series.astype("datetime64[ns]")
    text = series.astype(object).where(series.notna(), None)
    text = text.map(lambda v: None if v is None else str(v))  # plain str: numpy strings trip pandas' parser
    out = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True)
    return out.dt.tz_localize(None)


def as_units(series: pd.Series, unit: str) -> pd.Series:
    """A date column as float `unit`s since 1970-01-01 (NaN where missing or unparsable)."""
    stamps = parse(series)
    return pd.Series((stamps - EPOCH) / UNITS[unit], index=series.index, dtype="float64")


def date_columns(schema: Schema) -> list[Column]:
    return [c for c in schema.columns if c.type == "date"]


def has_dates(schema: Schema) -> bool:
    return schema.time_unit is not None or bool(date_columns(schema))


def numeric_schema(schema: Schema) -> Schema:
    """The schema the engine works on: a date time column as numbers, date columns as static reals."""
    if not has_dates(schema):
        return schema
    cols = tuple(
        dataclasses.replace(c, type="real", transform="none", min=None, max=None) if c.type == "date" else c
        for c in schema.columns
    )
    return dataclasses.replace(schema, time_unit=None, columns=cols)


def to_numbers(df: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """A copy of `df` with the schema's date columns as numbers (see the module docstring)."""
    if not has_dates(schema):
        return df
    out = df.copy()
    if schema.time_unit is not None and schema.time in out.columns:
        out[schema.time] = as_units(out[schema.time], schema.time_unit)
    for c in date_columns(schema):
        if c.name in out.columns:
            out[c.name] = as_units(out[c.name], "day")
    return out


def _format(series: pd.Series, unit: str) -> Format:
    if pd.api.types.is_datetime64_any_dtype(series):
        return "timestamp"
    stamps = parse(series).dropna()
    whole_days = bool(len(stamps)) and bool((stamps == stamps.dt.normalize()).all())
    return "date" if whole_days and UNITS[unit] >= UNITS["day"] else "datetime"


# the calendar grids a coarsened date may sit on, with each cell's (mean) length
GRIDS = {
    "hour": pd.Timedelta(hours=1),
    "day": pd.Timedelta(days=1),
    "week": pd.Timedelta(weeks=1),
    "month": pd.Timedelta(days=30.44),
    "year": pd.Timedelta(days=365.25),
}


def _cell_starts(stamps: pd.Series, grid: str) -> pd.Series:
    if grid in ("hour", "day"):
        return stamps.dt.floor("h" if grid == "hour" else "D")
    return stamps.dt.to_period({"week": "W-SUN", "month": "M", "year": "Y"}[grid]).dt.start_time


def k_bins(values: np.ndarray, patients: np.ndarray, k: int, unit: str) -> tuple[str, list[float]]:
    """(grid, bin starts in `unit`s since 1970): the finest calendar grid no finer than the unit
    (hourly at the finest) whose cells hold k patients on average over the span, and bins of
    consecutive cells merged until each holds at least k distinct patients (a short last bin
    joins the one before). Starts are calendar points (midnight, a Monday, the 1st), not dates
    of patients; one value per patient is expected."""
    keep = np.isfinite(values)
    values, pids = values[keep], patients[keep]
    if not len(values):
        return "day", []
    seconds = {g: cell.total_seconds() for g, cell in GRIDS.items()}
    span = (float(values.max()) - float(values.min())) * UNITS[unit].total_seconds()
    finest, n = UNITS[unit].total_seconds(), len(set(pids))  # sub-hour units get the hour grid at the finest
    grid = next((g for g, cell in seconds.items() if cell >= finest and n * cell >= k * max(span, cell)), "year")
    stamps = EPOCH + pd.to_timedelta(values * UNITS[unit].value, unit="ns")
    cells = ((_cell_starts(pd.Series(stamps), grid) - EPOCH) / UNITS[unit]).to_numpy(dtype=np.float64)
    order = np.argsort(cells, kind="stable")
    cells, pids = cells[order], pids[order]
    starts: list[float] = []
    members: set = set()
    for i, cell in enumerate(cells):
        if not starts or (len(members) >= k and cell != cells[i - 1]):
            starts.append(float(cell))
            members = set()
        members.add(pids[i])
    if len(starts) > 1 and len(members) < k:
        starts.pop()
    return grid, starts


def snap(values: np.ndarray, starts: list[float]) -> np.ndarray:
    """Each value replaced by the start of the bin it falls in (the first or last bin beyond them)."""
    if not starts:
        return values
    edges = np.asarray(starts, dtype=np.float64)
    idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 1)
    return np.where(np.isfinite(values), edges[idx], np.nan)


def to_dates(values: pd.Series, unit: str, fmt: Format) -> pd.Series:
    """Numbers of `unit`s since 1970-01-01 written as `fmt` (missing stays missing)."""
    stamps = EPOCH + pd.to_timedelta(values.to_numpy(dtype=np.float64) * UNITS[unit].value, unit="ns")
    stamps = pd.Series(stamps, index=values.index).dt.round("s")
    if fmt == "timestamp":
        return stamps
    text = stamps.dt.strftime("%Y-%m-%d" if fmt == "date" else "%Y-%m-%dT%H:%M:%S")
    return text.astype(object).where(stamps.notna(), None)


@dataclass
class Dating:
    """How the engine's numbers become dates again: formats and k-anonymous bins (JSON-able)."""

    k: int
    time: dict[str, Any] | None = None  # {"unit", "format", "grid", "bins"} of the first visit
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)  # date column -> {"format", "grid", "bins"}

    @classmethod
    def fit(cls, raw: pd.DataFrame, numbers: pd.DataFrame, schema: Schema, k: int) -> "Dating":
        """Formats from the training patients as read (`raw`), bins from the same patients as
        numbers after value protection (`numbers`), so the outermost bins start where k patients do."""
        d = cls(k=k)
        pid = numbers[schema.id]
        first = ~pid.duplicated().to_numpy()
        if schema.time_unit is not None:
            t0 = numbers[schema.time].astype(float).groupby(pid, sort=False).transform("min").to_numpy()
            grid, bins = k_bins(t0[first], pid.to_numpy()[first], k, schema.time_unit)
            d.time = {"unit": schema.time_unit, "format": _format(raw[schema.time], schema.time_unit), "grid": grid, "bins": bins}
        for c in date_columns(schema):
            days = pd.to_numeric(numbers[c.name], errors="coerce").groupby(pid, sort=False).transform("first").to_numpy()
            grid, bins = k_bins(days[first], pid.to_numpy()[first], k, "day")
            d.columns[c.name] = {"format": _format(raw[c.name], "day"), "grid": grid, "bins": bins}
        return d

    def coarsen(self, frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
        """Numbers snapped to the bins: each patient's first visit on its bin's start (later visits
        keep their gaps), each date column on its bin's start."""
        out = frame.copy()
        if self.time is not None:
            t = out[schema.time].astype(float)
            t0 = t.groupby(out[schema.id], sort=False).transform("min").to_numpy()
            out[schema.time] = t.to_numpy() + (snap(t0, self.time["bins"]) - t0)
        for name, spec in self.columns.items():
            out[name] = snap(pd.to_numeric(out[name], errors="coerce").to_numpy(dtype=np.float64), spec["bins"])
        return out

    def apply(self, frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
        """A decoded frame (numbers) coarsened and written back as dates."""
        out = self.coarsen(frame, schema)
        if self.time is not None:
            out[schema.time] = to_dates(out[schema.time], self.time["unit"], self.time["format"])
        for name, spec in self.columns.items():
            out[name] = to_dates(out[name], "day", spec["format"])
        return out

    def numbers(self, frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
        """A frame in the extract's format as the engine's numbers, coarsened as releases are, so
        real patients are judged at the resolution synthetic ones are released at."""
        out = frame.copy()
        if self.time is not None:
            out[schema.time] = as_units(out[schema.time], self.time["unit"])
        for name in self.columns:
            out[name] = as_units(out[name], "day")
        return self.coarsen(out, schema)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Dating":
        return cls(k=int(raw["k"]), time=raw.get("time"), columns=dict(raw.get("columns") or {}))
