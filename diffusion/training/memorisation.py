"""The memorisation signal training watches: are generated patients nearer training than unseen patients?

At each check, the EMA network generates patients; each is compared, in the encoded space
(padding zeroed), with a random set of training patients and an equally large set of the
validation patients the network never trained on. A network that learned the population puts
its patients as often nearest the one set as the other (share 0.5); one that memorises puts
them nearest the training set (share towards 1). Sets of equal size make 0.5 the fair value
whatever the cohort's size; several random training sets are averaged to lower the noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from diffusion.encoding import Encoded

SUBSETS = 5  # random training sets averaged per check


def flat(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Encoded patients [n, C, L] as vectors with every padded visit zeroed."""
    valid = np.arange(x.shape[2])[None, :] < lengths[:, None]
    return (x * valid[:, None, :]).reshape(len(x), -1).astype(np.float64)


def _nearest(reference: np.ndarray, query: np.ndarray) -> np.ndarray:
    d = (query**2).sum(1)[:, None] - 2.0 * query @ reference.T + (reference**2).sum(1)[None, :]
    return d.min(axis=1)


def closer_to_training(generated: np.ndarray, train: np.ndarray, validation: np.ndarray, seed: int) -> float:
    """Share of generated vectors whose nearest neighbour, among a random training set as large
    as the validation set and the validation set, is a training patient (ties count one half),
    averaged over `SUBSETS` random training sets."""
    rng = np.random.default_rng(seed)
    k = min(len(validation), len(train))
    d_val = _nearest(validation, generated)
    shares = []
    for _ in range(SUBSETS):
        d_train = _nearest(train[rng.choice(len(train), size=k, replace=False)], generated)
        shares.append(np.mean(np.where(np.isclose(d_train, d_val), 0.5, (d_train < d_val).astype(float))))
    return float(np.mean(shares))


@dataclass
class MemorisationProbe:
    """Generates `patients` patients with `sample(net, n, seed) -> [n, C, L]` and scores them."""

    sample: Callable[[torch.nn.Module, int, int], tuple[np.ndarray, np.ndarray]]  # -> (x, lengths)
    train: Encoded
    validation: Encoded
    patients: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        self._train = flat(self.train.x, self.train.lengths)
        self._validation = flat(self.validation.x, self.validation.lengths)

    def __call__(self, net: torch.nn.Module) -> float:
        x, lengths = self.sample(net, self.patients, self.seed)
        return closer_to_training(flat(x, lengths), self._train, self._validation, self.seed)
