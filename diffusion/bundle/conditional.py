"""Conditional sampling and rebalancing: patients of a subgroup defined on static columns.

`sample_where(model, n, where)` returns exactly n patients, each satisfying `where`, a pandas
query over static columns (`sex == 'f' and stage == 4`, `age > 60`). Equality terms on a static
binary or categorical column, joined by `and`, are inpainted: their label channels are fixed
while the network denoises, so every drawn patient has the label and the rest of the patient is
generated conditionally on it. The whole condition then filters the decoded patients (rejection),
in rounds sized by the acceptance seen so far, until n pass; a condition that almost no
generated patient meets is refused with a clear message rather than sampled for ever.
`sample_boosted(model, n, boosts)` draws each boosted subgroup (`column == value`) at `factor`
times its odds in the model's own sample, and the rest from the complement.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from diffusion.data.labels import as_binary, as_labels, canonical_label
from diffusion.errors import InputError

if TYPE_CHECKING:
    from diffusion.bundle.folder import HealthGymModel

MIN_ACCEPTANCE = 1e-3  # below this share of generated patients meeting a condition, sampling stops
PILOT = 256  # patients drawn to estimate a subgroup's share before boosting


class ConditionError(InputError):
    """A condition that cannot be used: unknown or non-static columns, bad syntax, an impossible value."""


@dataclass(frozen=True)
class Condition:
    """A parsed `where`: the expression as evaluated (labels canonical), the label columns it
    reads and the static label values it fixes (column -> label)."""

    text: str
    labels: dict[str, bool]  # label column -> whether it is binary
    fixed: dict[str, str]

    def matches(self, patients: pd.DataFrame) -> np.ndarray:
        """True per row of a one-row-per-patient frame that satisfies the condition; label
        columns are compared as canonical labels (`stage == 4` and `stage == '4'` agree)."""
        frame = patients.copy()
        for name, binary in self.labels.items():
            frame[name] = _canonical(frame[name], binary)
        try:
            return np.asarray(frame.eval(self.text, engine="python"), dtype=bool)
        except Exception as exc:  # pandas raises many types for a bad expression
            raise ConditionError(f"The condition {self.text!r} cannot be evaluated ({type(exc).__name__}).") from None


def _canonical(series: pd.Series, binary: bool) -> pd.Series:
    if binary:
        return as_binary(series).map(lambda v: None if pd.isna(v) else str(int(v)))
    return as_labels(series)


class _Canonicalise(ast.NodeTransformer):
    """Constants compared with a label column become canonical labels (binary: '0' / '1')."""

    def __init__(self, columns: dict):
        self.columns = columns
        self.fixed: dict[str, str] = {}

    def label(self, col, value) -> str:
        if col.type == "binary":
            v = as_binary(pd.Series([value], dtype=object)).iloc[0]
            if np.isnan(v):
                raise ConditionError(f"Column '{col.name}' is binary: compare it with 0/1 or true/false, not {value!r}.")
            return str(int(v))
        label = canonical_label(value)
        if label not in (col.categories or ()):
            raise ConditionError(f"Column '{col.name}' has no category {value!r} (its categories: {list(col.categories or ())}).")
        return label

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        sides = [node.left, *node.comparators]
        cols = [self.columns.get(n.id) for n in sides if isinstance(n, ast.Name)]
        col = next((c for c in cols if c is not None and not c.numeric), None)
        if col is None:
            return node

        def fix(n: ast.AST) -> ast.AST:
            if isinstance(n, ast.Constant):
                return ast.Constant(self.label(col, n.value))
            if isinstance(n, (ast.List, ast.Tuple)):
                return type(n)([fix(e) for e in n.elts], ast.Load())
            return n

        node.left, node.comparators = fix(node.left), [fix(c) for c in node.comparators]
        return node


def parse(where: str, model: "HealthGymModel") -> Condition:
    """Check `where` against the model's static columns; find the label equalities to inpaint."""
    static = {c.name: c for c in model.schema.static_columns}
    try:
        tree = ast.parse(where, mode="eval")
    except SyntaxError:
        raise ConditionError(
            f"The condition {where!r} is not a valid expression (write it as pandas' query does: sex == 'f' and age > 60)."
        ) from None
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - {"True", "False", "None"}
    unknown = sorted(names - set(static))
    if unknown:
        raise ConditionError(
            f"The condition names {unknown}, not static column(s) of model '{model.schema.name}'; "
            f"conditions are on static columns: {sorted(static)}."
        )
    tree = _Canonicalise(static).visit(tree)
    terms = tree.body.values if isinstance(tree.body, ast.BoolOp) and isinstance(tree.body.op, ast.And) else [tree.body]
    fixed: dict[str, str] = {}
    for term in terms:  # `column == label` joined by `and`: inpainted
        if isinstance(term, ast.Compare) and len(term.ops) == 1 and isinstance(term.ops[0], ast.Eq):
            pair = [term.left, term.comparators[0]]
            name = next((n.id for n in pair if isinstance(n, ast.Name) and not static[n.id].numeric), None)
            const = next((n.value for n in pair if isinstance(n, ast.Constant)), None)
            if name is not None and const is not None:
                fixed[name] = const
    labels = {n: static[n].type == "binary" for n in sorted(names) if not static[n].numeric}
    return Condition(ast.unparse(tree), labels, fixed)


def channels(model: "HealthGymModel", fixed: dict[str, str]) -> dict[int, float]:
    """The encoded value of each label channel that `fixed` determines (and 'present' for a nullable one)."""
    enc, out = model.encoder, {}
    ds = enc.state.discrete_scale
    for name, label in fixed.items():
        col = model.schema.column(name)
        chans = enc.label_channels(col)
        labels = ["1"] if col.type == "binary" else list(col.categories or ())
        for ch, lab in zip(chans, labels):
            out[ch] = ds if (lab == label if col.type != "binary" else label == "1") else -ds
        if col.nullable:
            out[enc.index(f"{name}__missing")] = -ds
    return out


def select(frame: pd.DataFrame, model: "HealthGymModel", where: str) -> pd.DataFrame:
    """The rows of the patients of a long frame (extract format) that meet `where`."""
    cond, idc = parse(where, model), model.schema.id
    first = _patients(frame, idc)
    return frame[frame[idc].isin(set(first[idc][cond.matches(first)]))]


def _patients(frame: pd.DataFrame, id_column: str) -> pd.DataFrame:
    """One row per patient (its first visit), in order of appearance."""
    return frame.drop_duplicates(id_column, keep="first").reset_index(drop=True)


def _number(frame: pd.DataFrame, id_column: str, start: int) -> pd.DataFrame:
    """`frame` with its patients numbered start, start+1, ... in order of appearance."""
    codes, _ = pd.factorize(frame[id_column], sort=False)
    return frame.assign(**{id_column: (codes + start).astype(np.int64)})


def _draw(model: "HealthGymModel", n: int, cond: Condition, seed: int) -> pd.DataFrame:
    """n patients meeting `cond`, not yet finished (ids 1..n)."""
    idc, fixed = model.schema.id, channels(model, cond.fixed)
    kept: list[pd.DataFrame] = []
    have, drawn, accepted, round_ = 0, 0, 0, 0
    while have < n:
        rate = max(accepted / drawn, MIN_ACCEPTANCE) if drawn else 1.0
        batch = int(min(max(math.ceil(1.2 * (n - have) / rate), 64), 50 * n + 64))
        frame = model.sample(batch, seed=seed + 7919 * round_, fixed=fixed, finish=False)
        finished = model.finish(frame)  # the condition reads values as released (dates as dates)
        ok = cond.matches(_patients(finished, idc))
        take = set(_patients(frame, idc)[idc][ok].iloc[: n - have])
        kept.append(_number(frame[frame[idc].isin(take)], idc, have + 1))
        have += len(take)
        drawn, accepted, round_ = drawn + batch, accepted + int(ok.sum()), round_ + 1
        if have < n and drawn >= 200 and accepted / drawn < MIN_ACCEPTANCE:
            raise ConditionError(
                f"Fewer than {MIN_ACCEPTANCE:.1%} of generated patients satisfy {cond.text!r} ({accepted} of {drawn}): "
                "the model has (almost) no such patients; loosen the condition."
            )
    return pd.concat(kept, ignore_index=True)


def sample_where(model: "HealthGymModel", n: int, where: str, *, seed: int = 0) -> pd.DataFrame:
    """Exactly n patients satisfying `where`, finished as releases are (see the module docstring)."""
    if n < 1:
        raise InputError(f"The number of patients to sample must be at least 1, got {n}.")
    return model.finish(_draw(model, n, parse(where, model), seed))


def sample_boosted(model: "HealthGymModel", n: int, boosts: dict[tuple[str, str], float], *, seed: int = 0) -> pd.DataFrame:
    """n patients in which each subgroup `column == value` has `factor` times its odds in a
    pilot sample of the model; the subgroups must not overlap (values of one column, or of
    columns no patient has both of)."""
    idc = model.schema.id
    pilot = _patients(model.finish(model.sample(PILOT, seed=seed + 1, finish=False)), idc)
    groups, others = [], []
    for (column, value), factor in boosts.items():
        cond = parse(f"{column} == {value!r}", model)
        share = min(max(float(cond.matches(pilot).mean()), 1.0 / PILOT), 1 - 1.0 / PILOT)
        odds = factor * share / (1 - share)
        groups.append((cond, odds / (1 + odds)))
        others.append(f"not ({cond.text})")
    if sum(p for _, p in groups) >= 1:
        raise ConditionError("The boosted subgroups together would take every patient; lower the factors.")
    counts = [int(round(n * p)) for _, p in groups]
    parts = [(cond, k) for (cond, _), k in zip(groups, counts) if k]
    if n - sum(counts) > 0:
        parts.append((parse(" and ".join(others), model), n - sum(counts)))
    frames, start = [], 1
    for i, (cond, k) in enumerate(parts):
        frames.append(_number(_draw(model, k, cond, seed + 101 * i), idc, start))
        start += k
    return model.finish(pd.concat(frames, ignore_index=True))


def parse_boost(text: str) -> tuple[tuple[str, str], float]:
    """`COLUMN=VALUE:FACTOR` -> ((column, value), factor)."""
    m = re.fullmatch(r"\s*([^=\s]+)\s*=\s*(.+?)\s*:\s*([0-9.]+)\s*", text)
    if not m or float(m.group(3)) <= 0:
        raise ConditionError(f"--boost {text!r} must look like COLUMN=VALUE:FACTOR with a positive factor (e.g. stage=4:3).")
    return (m.group(1), m.group(2)), float(m.group(3))
