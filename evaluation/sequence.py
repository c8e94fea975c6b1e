"""A detector that reads the visit sequences themselves: a small 1-D CNN, cross-validated.

In the spirit of TSGBench's discriminative score: real and synthetic patients become [patients,
channels, visits] tensors over the same channels, a small convolutional network with masked
pooling is trained to tell them apart on k - 1 folds and scores the held-out fold; the AUC of
the out-of-fold scores is the measure (0.5: indistinguishable). Each visit carries every temporal
number as its pooled rank in [-0.5, 0.5] (robust to any range), the rank of its change since
the previous visit and a missing flag, each temporal
label one-hot, the gap to the previous visit, the static columns and a validity mask, so the
network sees visit order, persistence, switching and the link of statics to the trajectory that
per-patient summaries flatten. Seeded; a fixed number of steps per fold keeps the cost flat in
the number of patients.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from diffusion.data.schema import Schema
from evaluation.data import PID, POS


def _rank(values: pd.Series) -> np.ndarray:
    """Pooled percentile rank in [-0.5, 0.5]; missing as 0."""
    return (values.rank(pct=True) - 0.5).fillna(0.0).to_numpy(np.float32)


def _visit_channels(df: pd.DataFrame, schema: Schema) -> np.ndarray:
    """[visits, channels] for a tidy frame of both sets at once (ranks are pooled)."""
    cols: list[np.ndarray] = []
    gaps = df.groupby(PID)[schema.time].diff()
    cols += [_rank(gaps), _rank(df[schema.time])]
    for col in schema.columns:
        s = df[col.name]
        if col.numeric or col.type == "binary":
            cols.append(_rank(s.astype(float)))
            if col.numeric and not col.static:  # the change since the previous visit, as its own rank
                cols.append(_rank(s.astype(float).groupby(df[PID]).diff()))
            if s.isna().any():
                cols.append(s.isna().to_numpy(np.float32))
        else:
            cols += [(s == cat).to_numpy(np.float32) for cat in col.categories or ()]
            if s.isna().any():
                cols.append(s.isna().to_numpy(np.float32))
    return np.stack(cols, axis=1) if cols else np.zeros((len(df), 1), np.float32)


def tensors(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x [patients, channels + 1, visits], lengths, labels 1 real / 0 synthetic); the last
    channel is the validity mask."""
    both = pd.concat([real.assign(_real=1), syn.assign(_real=0, **{PID: syn[PID] + real[PID].max() + 1})], ignore_index=True)
    feats = _visit_channels(both, schema)
    codes, pid = np.unique(both[PID].to_numpy(), return_inverse=True)
    pos = both[POS].to_numpy()
    length = int(pos.max()) + 1 if len(pos) else 1
    x = np.zeros((len(codes), feats.shape[1] + 1, length), np.float32)
    x[pid, :-1, pos] = feats
    x[pid, -1, pos] = 1.0
    lengths = np.bincount(pid, minlength=len(codes))
    labels = both.groupby(pid)["_real"].first().to_numpy()
    return x, lengths, labels


class _Net(torch.nn.Module):
    def __init__(self, channels: int, width: int = 32):
        super().__init__()
        self.conv = torch.nn.Sequential(
            torch.nn.Conv1d(channels, width, 3, padding=1),
            torch.nn.GELU(),
            torch.nn.Conv1d(width, width, 3, padding=2, dilation=2),
            torch.nn.GELU(),
        )
        self.head = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(2 * width + 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = x[:, -1:, :]
        h = self.conv(x) * mask
        n = mask.sum(-1).clamp_min(1.0)
        mean = h.sum(-1) / n
        peak = (h - 1e4 * (1 - mask)).amax(-1)
        return self.head(torch.cat([mean, peak, torch.log(n)], 1)).squeeze(1)


def _fit_predict(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, steps: int, seed: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = _Net(x.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    batch = min(128, len(train))
    idx = torch.from_numpy(train)
    net.train()
    for _ in range(steps):
        b = idx[torch.randint(len(idx), (batch,), generator=gen)]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xt[b]), yt[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        return torch.sigmoid(net(xt[torch.from_numpy(test)])).numpy()


def sequence_auc(
    real: pd.DataFrame, syn: pd.DataFrame, schema: Schema, *, seed: int = 0, folds: int = 3, steps: int = 200
) -> float:
    """Out-of-fold AUC of the CNN telling real patients (tidy frame `real`) from synthetic ones."""
    x, _, y = tensors(real, syn, schema)
    folds = int(max(2, min(folds, int(y.sum()), int(len(y) - y.sum()))))
    proba = np.zeros(len(y))
    with torch.random.fork_rng(devices=[]):  # the caller's torch RNG is left as it was
        for k, (train, test) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y)):
            proba[test] = _fit_predict(x, y, train, test, steps, seed + k)
    return float(roc_auc_score(y, proba))
