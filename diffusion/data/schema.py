"""The extract's schema (../shared/CONTRACT.md section 2), parsed and checked into a typed object.

A schema is a YAML file::

    name: pbc
    id: id
    time: day
    regular: false
    max_length: 16
    columns:
      sex: {type: categorical, static: true, categories: [f, m]}
      bili: {type: real, min: 0, transform: boxcox, nullable: true}

The time column may hold dates (`time: {column: visit_date, unit: day}`, ISO text or datetimes)
and static columns may be `type: date`; `diffusion.data.dates` turns them into numbers for the
engine and back. Every problem found in a schema is collected and raised together as one `SchemaError`, so a
user fixes the file in one pass. This module is plain Python (no torch, Prefect or MLflow).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from diffusion.data.labels import canonical_label
from diffusion.errors import InputError

TYPES = ("real", "integer", "binary", "categorical", "date")
TIME_UNITS = ("second", "minute", "hour", "day", "week")
TRANSFORMS = ("boxcox", "log", "none")
COLUMN_KEYS = {"type", "static", "categories", "min", "max", "transform", "nullable", "max_missing", "description"}
SCHEMA_KEYS = {"name", "id", "time", "regular", "max_length", "columns", "min_patients", "target", "description"}
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


class SchemaError(InputError):
    """A schema file that cannot be used; the message lists every problem found."""


@dataclass(frozen=True)
class Column:
    """One feature column of the extract."""

    name: str
    type: str
    static: bool = False
    categories: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    transform: str | None = None  # None: chosen from the data when the encoder is fitted
    nullable: bool = False
    max_missing: float | None = None  # validation bound on the missing rate (nullable columns)

    @property
    def numeric(self) -> bool:
        return self.type in ("real", "integer")

    @property
    def allowed_missing(self) -> float:
        """The largest missing rate validation accepts for this column."""
        if not self.nullable:
            return 0.0
        return 1.0 if self.max_missing is None else self.max_missing

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.static:
            out["static"] = True
        if self.categories is not None:
            out["categories"] = list(self.categories)
        for key in ("min", "max", "transform", "max_missing"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.nullable:
            out["nullable"] = True
        return out


@dataclass(frozen=True)
class Schema:
    """A parsed, checked schema. `columns` keeps the file's order."""

    name: str
    id: str
    time: str
    columns: tuple[Column, ...]
    regular: bool = False
    time_unit: str | None = None  # the time column holds dates; gaps are modelled in this unit
    max_length: int = 64
    min_patients: int = 10
    target: str | None = None
    description: str = ""

    # ---- lookups -------------------------------------------------------------------------
    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def static_columns(self) -> list[Column]:
        return [c for c in self.columns if c.static]

    @property
    def temporal_columns(self) -> list[Column]:
        return [c for c in self.columns if not c.static]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    # ---- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "id": self.id,
            "time": self.time if self.time_unit is None else {"column": self.time, "unit": self.time_unit},
            "regular": self.regular,
            "max_length": self.max_length,
            "min_patients": self.min_patients,
        }
        if self.target is not None:
            out["target"] = self.target
        if self.description:
            out["description"] = self.description
        out["columns"] = {c.name: c.to_dict() for c in self.columns}
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())

    @classmethod
    def from_dict(cls, raw: Any, *, source: str = "schema") -> "Schema":
        return _parse(raw, source)

    @classmethod
    def load(cls, path: str | Path) -> "Schema":
        path = Path(path)
        if not path.exists():
            raise SchemaError(f"Schema file {path} does not exist.")
        if path.is_dir():
            raise SchemaError(f"Schema path {path} is a folder, not a YAML file.")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise SchemaError(f"Schema file {path} is not UTF-8 text.") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise SchemaError(f"Schema file {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}.") from None
        return _parse(raw, str(path))


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _as_bool(value: Any, key: str, where: str, problems: list[str]) -> bool:
    if isinstance(value, bool):
        return value
    problems.append(f"{where}: '{key}' must be true or false, not {value!r}")
    return False


def _parse(raw: Any, source: str) -> Schema:
    """The schema a YAML mapping describes; every problem found is reported at once (SchemaError)."""
    if not isinstance(raw, dict):
        raise SchemaError(
            f"Schema {source} must be a YAML mapping with name, id, time and columns; it holds {type(raw).__name__}."
        )
    problems: list[str] = []
    unknown = sorted(set(map(str, raw)) - SCHEMA_KEYS)
    if unknown:
        problems.append(f"unknown top-level key(s) {unknown} (allowed: {sorted(SCHEMA_KEYS)})")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(
            f"'name' must be a short identifier (letters, digits, '_', '.', '-', starting with a letter), got {name!r}"
        )
    id_col, time_col, time_unit = _identity(raw, problems)
    regular = _as_bool(raw.get("regular", False), "regular", "schema", problems)
    if regular and time_unit is not None:
        problems.append("a time column of dates has irregular gaps: 'regular' must be false")
    max_length = _positive_int(raw, "max_length", 64, problems)
    min_patients = _positive_int(raw, "min_patients", 10, problems)
    raw_cols = raw.get("columns")
    if not isinstance(raw_cols, dict) or not raw_cols:
        problems.append("'columns' must be a non-empty mapping of column name to its description")
        raw_cols = {}
    parsed = [_column(str(cname), spec, (id_col, time_col), problems) for cname, spec in raw_cols.items()]
    columns = [c for c in parsed if c is not None]
    target = raw.get("target")
    if target is not None and target not in [c.name for c in columns]:
        problems.append(f"'target' names {target!r}, which is not one of the listed columns")
    if problems:
        raise SchemaError(f"Schema {source} has {len(problems)} problem(s): " + "; ".join(problems) + ".")
    return Schema(
        name=name,
        id=id_col,
        time=time_col,
        columns=tuple(columns),
        regular=regular,
        time_unit=time_unit,
        max_length=max_length,
        min_patients=min_patients,
        target=target,
        description=str(raw.get("description", "") or ""),
    )


def _identity(raw: dict, problems: list[str]) -> tuple[Any, Any, str | None]:
    """(id column, time column, time unit or None): the time may be `{column: NAME, unit: day}` (dates)."""
    id_col, time_col = raw.get("id"), raw.get("time")
    time_unit = None
    if isinstance(time_col, dict):
        bad = sorted(set(map(str, time_col)) - {"column", "unit"})
        if bad:
            problems.append(f"'time' has unknown key(s) {bad} (allowed: ['column', 'unit'])")
        time_unit = time_col.get("unit", "day")
        if time_unit not in TIME_UNITS:
            problems.append(f"'time' unit {time_unit!r} is not one of {list(TIME_UNITS)}")
            time_unit = "day"
        time_col = time_col.get("column")
    for key, value in (("id", id_col), ("time", time_col)):
        if not isinstance(value, str) or not value:
            problems.append(
                f"'{key}' (the {'patient identifier' if key == 'id' else 'time'} column) is missing or not a column name"
            )
    if isinstance(id_col, str) and id_col == time_col:
        problems.append("'id' and 'time' must be different columns")
    return id_col, time_col, time_unit


def _positive_int(raw: dict, key: str, default: int, problems: list[str]) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.append(f"'{key}' must be a positive integer, got {value!r}")
        return 1
    return value


def _column(cname: str, spec: Any, reserved: tuple[Any, Any], problems: list[str]) -> Column | None:
    """One entry of `columns`; None when it cannot be read at all (the problem is recorded)."""
    where = f"column '{cname}'"
    if cname in reserved:
        problems.append(f"{where} is the id or time column and must not be listed under 'columns'")
        return None
    if not isinstance(spec, dict):
        problems.append(f"{where} must be a mapping such as {{type: real}}, got {spec!r}")
        return None
    bad = sorted(set(map(str, spec)) - COLUMN_KEYS)
    if bad:
        problems.append(f"{where} has unknown key(s) {bad} (allowed: {sorted(COLUMN_KEYS)})")
    ctype = spec.get("type")
    if ctype not in TYPES:
        problems.append(f"{where} has type {ctype!r}; it must be one of {list(TYPES)}")
        return None
    static = _as_bool(spec.get("static", False), "static", where, problems)
    if ctype == "date" and not static:
        problems.append(f"{where} is a date and must be static (a visit's own date is the time column)")
    nullable = _as_bool(spec.get("nullable", False), "nullable", where, problems)
    categories = _categories(spec.get("categories"), ctype, where, problems)
    lo_n, hi_n = _bounds(spec, ctype, where, problems)
    transform = spec.get("transform")
    if transform is not None:
        if transform not in TRANSFORMS:
            problems.append(f"{where}: transform {transform!r} is not one of {list(TRANSFORMS)}")
        elif ctype not in ("real", "integer") and transform != "none":
            problems.append(f"{where}: transform {transform!r} applies to real and integer columns only")
    return Column(
        name=cname,
        type=ctype,
        static=static,
        categories=categories,
        min=lo_n,
        max=hi_n,
        transform=transform if transform in TRANSFORMS else None,
        nullable=nullable,
        max_missing=_max_missing(spec.get("max_missing"), nullable, where, problems),
    )


def _categories(categories: Any, ctype: str, where: str, problems: list[str]) -> tuple[str, ...] | None:
    if ctype != "categorical":
        if categories is not None:
            problems.append(f"{where} has 'categories' but is of type {ctype}; only categorical columns take them")
        return None
    if not isinstance(categories, list) or not categories:
        problems.append(f"{where} is categorical and needs a non-empty 'categories' list")
        return None
    labels = [canonical_label(v) for v in categories]
    if len(set(labels)) != len(labels):
        problems.append(f"{where} lists a category twice")
    return tuple(labels)


def _bounds(spec: dict, ctype: str, where: str, problems: list[str]) -> tuple[float | None, float | None]:
    lo, hi = spec.get("min"), spec.get("max")
    lo_n, hi_n = _as_number(lo), _as_number(hi)
    if lo is not None and lo_n is None:
        problems.append(f"{where}: 'min' must be a finite number, got {lo!r}")
    if hi is not None and hi_n is None:
        problems.append(f"{where}: 'max' must be a finite number, got {hi!r}")
    if (lo_n is not None or hi_n is not None) and ctype not in ("real", "integer"):
        problems.append(f"{where}: 'min'/'max' apply to real and integer columns only")
    if lo_n is not None and hi_n is not None and lo_n > hi_n:
        problems.append(f"{where}: min ({lo_n:g}) is greater than max ({hi_n:g})")
    return lo_n, hi_n


def _max_missing(value: Any, nullable: bool, where: str, problems: list[str]) -> float | None:
    if value is None:
        return None
    rate = _as_number(value)
    if rate is None or not 0 <= rate <= 1:
        problems.append(f"{where}: 'max_missing' must be a rate between 0 and 1, got {value!r}")
        return None
    if not nullable:
        problems.append(f"{where}: 'max_missing' needs 'nullable: true'")
        return None
    return rate
