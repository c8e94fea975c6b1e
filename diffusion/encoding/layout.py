"""The channel layout of the [patients, channels, time] tensor (values in [-1, 1]).

- ``__valid__``: +1 at a visit, -1 after the patient's last visit (the network generates it).
- ``__length__``: the number of visits scaled to [-1, 1], static; decoding reads the length here.
- ``__gap__`` (irregular schemas): the scaled gap since the previous visit (with patient levels:
  a deviation channel plus the static ``__gap__level``); decoded cumulatively into times.
- ``__t0__`` (only when patients start at different times): the first visit's time, static.
- per numeric column: one value channel; a temporal one with patient levels is the visit's
  deviation plus a static ``<name>__level`` channel (`diffusion.encoding.levels`).
- per binary column one channel, per categorical one channel per category ``<name>=<label>``
  (`diffusion.encoding.switching`); per nullable column a ``<name>__missing`` channel.
- per temporal number (and the gap) whose values often repeat, a ``<name>__same`` channel: the
  visit repeats the previous visit's value (`diffusion.encoding.repeats`).

Static columns are broadcast over every time step; the loss mask is 1 where a channel carries
information (validity and static channels everywhere, temporal ones at recorded visits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from diffusion.data.schema import Schema

VALID = "__valid__"
LENGTH = "__length__"
GAP = "__gap__"
T0 = "__t0__"

Kind = Literal["valid", "length", "gap", "level", "t0", "value", "onehot", "missing", "repeat"]


class Channel(NamedTuple):
    name: str
    kind: Kind
    column: str | None  # the schema column (GAP for the gap's channels), None for valid / length / t0


@dataclass
class Encoded:
    """An encoded cohort. x, mask: [patients, channels, time] float32; lengths: [patients]."""

    x: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, idx: np.ndarray) -> "Encoded":
        return Encoded(self.x[idx], self.mask[idx], self.lengths[idx])

    def visits(self) -> np.ndarray:
        """[patients, time] bools: True at each patient's recorded visits."""
        return visit_mask(self.lengths, self.x.shape[2])


def visit_mask(lengths: np.ndarray, L: int) -> np.ndarray:
    """[n, L] bools, True at the first `lengths[i]` visits of row i."""
    return np.arange(L)[None, :] < np.asarray(lengths)[:, None]


def channel_layout(schema: Schema, levels: set[str], t0_varies: bool, repeats: frozenset[str] = frozenset()) -> list[Channel]:
    """Every channel in tensor order; `levels` names the numbers split into level + deviation,
    `repeats` those with a repeat channel."""
    out = [Channel(VALID, "valid", None), Channel(LENGTH, "length", None)]
    if not schema.regular:
        out.append(Channel(GAP, "gap", GAP))
        if GAP in levels:
            out.append(Channel(f"{GAP}level", "level", GAP))
        if GAP in repeats:
            out.append(Channel(repeat_channel(GAP), "repeat", GAP))
    if t0_varies:
        out.append(Channel(T0, "t0", None))
    for col in schema.columns:
        if col.numeric or col.type == "binary":
            out.append(Channel(col.name, "value", col.name))
            if col.name in levels:
                out.append(Channel(f"{col.name}__level", "level", col.name))
            if col.name in repeats:
                out.append(Channel(repeat_channel(col.name), "repeat", col.name))
        else:
            out.extend(Channel(f"{col.name}={cat}", "onehot", col.name) for cat in col.categories or ())
        if col.nullable:
            out.append(Channel(f"{col.name}__missing", "missing", col.name))
    return out


def level_channel(name: str) -> str:
    """The static level channel of a number split into level + deviation."""
    return f"{GAP}level" if name == GAP else f"{name}__level"


def repeat_channel(name: str) -> str:
    """The repeat channel of a temporal number or the gap."""
    return f"{name}__same"


def is_discrete(schema: Schema, channel: Channel) -> bool:
    """Binary, one-hot, missingness and repeat channels: coded -/+ discrete_scale, decoded by sign / argmax."""
    kind, col = channel.kind, channel.column
    return kind in ("onehot", "missing", "repeat") or (
        kind == "value" and col not in (None, GAP) and schema.column(col).type == "binary"
    )


def length_to_z(lengths: np.ndarray, L: int) -> np.ndarray:
    return np.zeros(len(lengths)) if L == 1 else 2.0 * (lengths - 1) / (L - 1) - 1.0


def z_to_length(z: np.ndarray, L: int) -> np.ndarray:
    return np.clip(np.rint((np.clip(z, -1, 1) + 1) / 2 * (L - 1) + 1), 1, L).astype(np.int64)


def pooled_counts(values: np.ndarray, k: int) -> dict[str, float]:
    """Histogram of integer values (visit counts, at least 1) in which no count stands for fewer
    than k patients and no value held by fewer than k appears, for sampling lengths.

    The values are first cut at the k-th largest, as value protection trims the longest patients.
    A value held by k or more (an anchor) keeps its own count. The values between two anchors
    (and below the first, from 1) are cut, in order, into pools of at least k (a last pool short
    of k joins the one before; a lone pool short of k is counted at the anchor beside it); a
    pool's patients are spread evenly over the integers from its first value (the first pool:
    just after the anchor below, or 1) up to the next pool or anchor. With fewer than k values in
    all, one pool covers 1 to the largest. Keys are the values as strings."""
    v = np.sort(np.asarray(values, dtype=int))
    if v.size < k:
        return _spread(1, int(v[-1]), float(v.size)) if v.size else {}
    keys, counts = np.unique(np.minimum(v, v[-k]), return_counts=True)
    keys, counts = np.r_[0, keys], np.r_[0, counts]  # 0: the edge below every length, no patients
    anchors = [0] + [i for i in range(1, len(keys)) if counts[i] >= k]  # the last value among them
    out = {str(int(keys[i])): float(counts[i]) for i in anchors[1:]}
    for a, b in zip(anchors, anchors[1:]):
        pools = _pools(keys[a + 1 : b], counts[a + 1 : b], k)
        if pools and pools[-1][1] < k:  # a lone pool short of k: counted at an anchor beside it
            out[str(int(keys[a] if a else keys[b]))] += pools.pop()[1]
        if pools:
            pools[0][0] = int(keys[a]) + 1
        ends = [first - 1 for first, _ in pools[1:]] + [int(keys[b]) - 1]
        for (first, n), last in zip(pools, ends):
            out.update(_spread(first, last, float(n)))
    return dict(sorted(out.items(), key=lambda item: int(item[0])))


def _pools(keys: np.ndarray, counts: np.ndarray, k: int) -> list[list[int]]:
    """[first value, patients] of consecutive values cut into pools of at least k, in order; a
    last pool short of k joins the one before (so only a lone pool can be short)."""
    pools: list[list[int]] = []
    for key, count in zip(keys, counts):
        if pools and pools[-1][1] < k:
            pools[-1][1] += int(count)
        else:
            pools.append([int(key), int(count)])
    if len(pools) > 1 and pools[-1][1] < k:
        pools[-2][1] += pools.pop()[1]
    return pools


def _spread(first: int, last: int, patients: float) -> dict[str, float]:
    """`patients` spread evenly over the integers first..last."""
    return {str(x): patients / (last - first + 1) for x in range(first, last + 1)}
