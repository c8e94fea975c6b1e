"""Fidelity, temporal, utility and privacy evaluation of synthetic trajectories, with release gates.

Plain pandas / scikit-learn / sdmetrics / matplotlib: no Prefect or MLflow. Entry points:
`evaluate` (frames) and `evaluate_files` (files, for ``healthgym evaluate``); see
`evaluation.core` for the metric names and the no-holdout behaviour.
"""

from evaluation.core import EvaluationResult, evaluate, evaluate_files
from evaluation.gates import GateResult

__all__ = ["EvaluationResult", "GateResult", "evaluate", "evaluate_files"]
