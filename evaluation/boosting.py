"""Gradient boosting on patient features that survives any fold: the one home of the classifier and
regressor that detection and utility fit.

Histogram gradient boosting handles missing values natively, but refuses a feature that holds no
finite value in the rows it is fitted on (a lab nobody in the fold had, the gaps of one-visit
patients). Such features carry no information for that fit, so each fit drops them and predicts
with the same columns. Infinite values are treated as missing. Seeded, on one OpenMP thread:
the tables are small, and OpenMP's busy-waiting threads slow down many-fold on a shared CI machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits


def _finite(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=float)
    return np.where(np.isfinite(X), X, np.nan)


@dataclass
class Boosted:
    """A fitted model and the feature columns it reads."""

    model: HistGradientBoostingClassifier | HistGradientBoostingRegressor
    columns: np.ndarray

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        with threadpool_limits(limits=1, user_api="openmp"):
            return self.model.predict_proba(self._x(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        with threadpool_limits(limits=1, user_api="openmp"):
            return self.model.predict(self._x(X))

    @property
    def classes_(self) -> np.ndarray:
        return self.model.classes_

    def _x(self, X: np.ndarray) -> np.ndarray:
        X = _finite(X)
        return X[:, self.columns] if self.columns.size else np.zeros((len(X), 1))


def _fit(model, X: np.ndarray, y: np.ndarray) -> Boosted:
    X = _finite(X)
    columns = np.flatnonzero(np.isfinite(X).any(axis=0)) if X.size else np.array([], int)
    Xc = X[:, columns] if columns.size else np.zeros((len(X), 1))  # no information at all: a constant feature
    with threadpool_limits(limits=1, user_api="openmp"):
        model.fit(Xc, y)
    return Boosted(model, columns)


def classifier(X: np.ndarray, y: np.ndarray, seed: int) -> Boosted:
    """A gradient-boosting classifier fitted on (X, y); small trees, no early stopping (seeded)."""
    model = HistGradientBoostingClassifier(
        max_iter=100,
        learning_rate=0.1,
        max_leaf_nodes=15,
        min_samples_leaf=10,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=seed,
    )
    return _fit(model, X, y)


def regressor(X: np.ndarray, y: np.ndarray, seed: int) -> Boosted:
    """A gradient-boosting regressor fitted on (X, y) (seeded)."""
    return _fit(HistGradientBoostingRegressor(max_iter=100, early_stopping=False, random_state=seed), X, y)
