"""Fidelity, temporal, utility and privacy evaluation of synthetic trajectories (no Prefect/MLflow)."""

from evaluation.report import EvaluationResult, GateResult, evaluate, evaluate_files

__all__ = ["EvaluationResult", "GateResult", "evaluate", "evaluate_files"]
