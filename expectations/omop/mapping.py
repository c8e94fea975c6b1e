"""The OMOP mapping file: which OMOP concepts become which columns of the long extract.

```yaml
name: pbc               # the extract's (and the draft schema's) name
id: id                  # the extract's id column (it holds person_id)
time: day               # the extract's time column: days since the person's first visit
group_by: visit         # one row per visit_occurrence_id (visit), or per date of the events (day)
aggregate: mean         # how the values of one concept in one row are combined: mean last first max min
person:                 # static columns from the person table
  age: {field: age}                                   # years at the first visit
  sex: {field: gender, labels: {8532: f, 8507: m}}    # gender_concept_id -> label
columns:                # from measurement / observation rows
  bili:  {table: measurement, concept_id: 3024128, unit: mg/dL}        # value_as_number
  stage: {table: observation, concept_id: 2000000015, labels: {2000000021: "1"}}  # value_as_concept_id
  trt:   {table: observation, concept_id: 2000000001, static: true}   # one value per person
conditions:             # static 0/1 flags: 1 when the person has any condition_occurrence of these
  cirrhosis: {concept_ids: [4064161]}
```
A column with `labels` takes value_as_concept_id through them (its `aggregate` defaults to
`last`; mean, max and min are refused for labels); without, value_as_number. Every problem of a
file is reported at once, as one `MappingError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffusion.errors import InputError
from diffusion.yamlfile import read_yaml

AGGREGATES = ("mean", "last", "first", "max", "min")
TABLES = {"measurement": "measurement_concept_id", "observation": "observation_concept_id"}
PERSON_FIELDS = ("age", "gender")
_TOP = {"name", "id", "time", "group_by", "aggregate", "person", "columns", "conditions", "visit_concept_id"}
_COLUMN = {"table", "concept_id", "labels", "aggregate", "static", "unit"}


class MappingError(InputError):
    """A mapping file with errors."""


@dataclass(frozen=True)
class Mapped:
    """One extract column from measurement or observation rows of one concept."""

    name: str
    table: str
    concept_id: int
    labels: dict[int, str] | None = None
    aggregate: str = "mean"
    static: bool = False
    unit: str | None = None


@dataclass(frozen=True)
class Mapping:
    name: str
    id: str
    time: str
    group_by: str
    person: dict[str, dict[str, Any]]
    columns: tuple[Mapped, ...]
    conditions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    visit_concept_id: int = 9202  # Outpatient Visit

    def concepts(self, table: str) -> dict[int, Mapped]:
        return {c.concept_id: c for c in self.columns if c.table == table}

    @property
    def names(self) -> list[str]:
        return [*self.person, *(c.name for c in self.columns), *self.conditions]


def load_mapping(path: str | Path) -> Mapping:
    """The mapping file at `path`, checked."""
    path = Path(path)
    return parse_mapping(read_yaml(path, "OMOP mapping file", MappingError), source=str(path))


def parse_mapping(raw: Any, *, source: str = "(given in code)") -> Mapping:
    """A mapping from its YAML form; every problem in one `MappingError`."""
    if not isinstance(raw, dict):
        raise MappingError(f"OMOP mapping {source} must be a mapping with keys name, id, time, columns.")
    problems = [f"unknown key(s) {sorted(set(raw) - _TOP)}"] if set(raw) - _TOP else []
    for key in ("name", "id", "time"):
        if not isinstance(raw.get(key), str) or not raw.get(key):
            problems.append(f"{key} must be given (a name)")
    if raw.get("id") and raw.get("id") == raw.get("time"):
        problems.append("id and time must be two different columns")
    group_by = raw.get("group_by", "visit")
    if group_by not in ("visit", "day"):
        problems.append(f"group_by must be visit or day, not {group_by!r}")
    default = raw.get("aggregate", "mean")
    if default not in AGGREGATES:
        problems.append(f"aggregate must be one of {list(AGGREGATES)}, not {default!r}")
        default = "mean"
    person = _person(raw.get("person") or {}, problems)
    columns = [_column(name, spec, default, problems) for name, spec in _items(raw.get("columns"), "columns", problems)]
    conditions = {name: _condition(name, spec, problems) for name, spec in _items(raw.get("conditions"), "conditions", problems)}
    _no_clashes(raw, person, [c for c in columns if c], conditions, problems)
    if not columns:
        problems.append("columns must map at least one concept")
    if problems:
        raise MappingError(f"OMOP mapping {source} has {len(problems)} problem(s): " + "; ".join(problems) + ".")
    return Mapping(
        name=raw["name"],
        id=raw["id"],
        time=raw["time"],
        group_by=group_by,
        person=person,
        columns=tuple(columns),
        conditions=conditions,
        visit_concept_id=int(raw.get("visit_concept_id", 9202)),
    )


def _items(section: Any, what: str, problems: list[str]) -> list[tuple[str, Any]]:
    if section is None:
        return []
    if not isinstance(section, dict):
        problems.append(f"{what} must be a mapping of column name -> settings")
        return []
    return [(str(k), v) for k, v in section.items()]


def _labels(name: str, labels: Any, problems: list[str]) -> dict[int, str] | None:
    if labels is None:
        return None
    if not isinstance(labels, dict) or not labels or not all(_is_int(k) for k in labels):
        problems.append(f"{name}: labels must map concept ids (integers) to labels")
        return None
    out = {int(k): str(v) for k, v in labels.items()}
    if len(set(out.values())) < len(out):
        problems.append(f"{name}: labels give one label to two concepts (the way back to OMOP would be ambiguous)")
    return out


def _person(section: Any, problems: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, spec in _items(section, "person", problems):
        if not isinstance(spec, dict) or spec.get("field") not in PERSON_FIELDS or set(spec) - {"field", "labels"}:
            problems.append(f"person.{name} must be {{field: age}} or {{field: gender, labels: {{8532: f, 8507: m}}}}")
            continue
        labels = _labels(f"person.{name}", spec.get("labels"), problems)
        if spec["field"] == "gender" and labels is None:
            problems.append(f"person.{name}: a gender column needs labels (gender_concept_id -> label)")
        out[name] = {"field": spec["field"], "labels": labels}
    return out


def _column(name: str, spec: Any, default: str, problems: list[str]) -> Mapped | None:
    if not isinstance(spec, dict):
        problems.append(f"columns.{name} must be a mapping (table, concept_id, ...)")
        return None
    if set(spec) - _COLUMN:
        problems.append(f"columns.{name}: unknown key(s) {sorted(set(spec) - _COLUMN)}")
    table = spec.get("table", "measurement")
    if table not in TABLES:
        problems.append(f"columns.{name}: table must be one of {sorted(TABLES)}, not {table!r}")
    if not _is_int(spec.get("concept_id")):
        problems.append(f"columns.{name}: concept_id must be an integer")
        return None
    labels = _labels(f"columns.{name}", spec.get("labels"), problems)
    aggregate = spec.get("aggregate", "last" if labels else default)
    if aggregate not in AGGREGATES:
        problems.append(f"columns.{name}: aggregate must be one of {list(AGGREGATES)}")
    elif labels and aggregate not in ("first", "last"):
        problems.append(f"columns.{name}: labels can only be aggregated first or last, not {aggregate}")
    unit = spec.get("unit")
    return Mapped(name, table, int(spec["concept_id"]), labels, aggregate, bool(spec.get("static", False)), unit)


def _condition(name: str, spec: Any, problems: list[str]) -> tuple[int, ...]:
    ids = spec.get("concept_ids") if isinstance(spec, dict) else None
    if not isinstance(ids, list) or not ids or not all(_is_int(i) for i in ids):
        problems.append(f"conditions.{name} must be {{concept_ids: [integer, ...]}}")
        return ()
    return tuple(int(i) for i in ids)


def _no_clashes(raw: dict, person: dict, columns: list[Mapped], conditions: dict, problems: list[str]) -> None:
    names = [*person, *(c.name for c in columns), *conditions]
    dupes = sorted({n for n in names if names.count(n) > 1} | {n for n in names if n in (raw.get("id"), raw.get("time"))})
    if dupes:
        problems.append(f"column name(s) {dupes} used twice (or as the id or time column)")
    seen: dict[tuple[str, int], str] = {}
    for c in columns:
        if (c.table, c.concept_id) in seen:
            problems.append(f"concept {c.concept_id} in {c.table} mapped twice ({seen[(c.table, c.concept_id)]}, {c.name})")
        seen[(c.table, c.concept_id)] = c.name


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
