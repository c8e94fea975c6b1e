"""Label channels: how a binary or categorical column's values are coded and decoded.

A binary is one channel (-s / +s), a categorical one channel per category (one-hot as -s / +s),
s the encoder's discrete scale. A static label decodes as the best-scoring label averaged over
the patient's visits; a temporal one as the label sequence that best fits its visit scores minus
a penalty per change (`switching_decode`; penalty 0: the plain argmax). Decoding restores the
extract's own spelling of each label (`representatives`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def representatives(series: pd.Series, labels: pd.Series) -> dict[str, Any]:
    """label -> the first original value with that label (JSON-able), so decoding restores the
    extract's own coding (1 / "yes" / True)."""
    out: dict[str, Any] = {}
    for raw, lab in zip(series.tolist(), labels.tolist()):
        if lab is None or lab in out:
            continue
        out[lab] = raw.item() if hasattr(raw, "item") else raw
    return out


def switching_decode(scores: np.ndarray, recorded: np.ndarray, penalty: float) -> np.ndarray:
    """Category codes [n, L] maximising the summed scores minus `penalty` per change (Viterbi).

    scores [n, K, L] are a temporal categorical's channels (a binary: -v and +v); recorded [n, L]
    marks the visits where the value is present (missing visits neither score nor break a run:
    a change is counted against the last recorded category). penalty 0 is the plain argmax.
    """
    n, K, L = scores.shape
    if penalty <= 0 or K < 2:
        return scores.argmax(axis=1)
    rows, ks = np.arange(n), np.arange(K)[None, :]
    best = np.zeros((n, K))  # best total ending in category k at the last recorded visit
    back = np.tile(np.arange(K), (n, L, 1))  # category at the previous recorded visit
    started = np.zeros(n, bool)
    for t in range(L):
        order = np.argsort(-best, axis=1)
        top, second = order[:, 0], order[:, 1]
        is_top = top[:, None] == ks
        switch = np.where(is_top, best[rows, second][:, None], best[rows, top][:, None]) - penalty
        switch_from = np.where(is_top, second[:, None], top[:, None])
        stay = best >= switch
        new = np.where(stay, best, switch) + scores[:, :, t]
        prev = np.where(stay, ks, switch_from)
        new = np.where(started[:, None], new, scores[:, :, t])
        prev = np.where(started[:, None], prev, ks)
        here = recorded[:, t][:, None]
        best = np.where(here, new, best)
        back[:, t] = np.where(here, prev, ks)
        started |= recorded[:, t]
    codes = np.zeros((n, L), dtype=np.int64)
    cur = best.argmax(axis=1)
    for t in range(L - 1, -1, -1):
        codes[:, t] = cur
        cur = back[rows, t, cur]
    return codes
