"""Batches of patients of similar length, for a network that sees only the visits.

Each epoch the training patients are shuffled, cut into chunks of `chunk` batches, each chunk
sorted by length and cut into batches, and the batches shuffled: every patient is drawn once
per epoch, and a batch cut to its longest patient carries little padding. Step s's batch is a
function of (seed, s) alone, so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import math

import numpy as np


class LengthBuckets:
    def __init__(self, lengths: np.ndarray, batch: int, seed: int, chunk: int = 8):
        self.lengths = np.asarray(lengths)
        self.batch = max(1, min(batch, len(self.lengths)))
        self.seed, self.chunk = seed, chunk
        chunks = np.array_split(np.arange(len(self.lengths)), math.ceil(len(self.lengths) / (chunk * self.batch)))
        self.per_epoch = sum(math.ceil(len(c) / self.batch) for c in chunks)
        self._epoch: int | None = None
        self._batches: list[np.ndarray] = []

    def indices(self, step: int) -> np.ndarray:
        """The patients (row indices) of step `step`'s batch."""
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._batches, self._epoch = self._plan(epoch), epoch
        return self._batches[i]

    def _plan(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(len(self.lengths))
        batches = []
        # equal splits, so no batch is a remainder of a patient or two (each rank of a group takes a share)
        for part in np.array_split(perm, math.ceil(len(perm) / (self.chunk * self.batch))):
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches += np.array_split(part, math.ceil(len(part) / self.batch))
        return [batches[k] for k in rng.permutation(len(batches))]
