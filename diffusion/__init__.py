"""Health Gym's library: schema, encoding, the diffusion model, training, sampling, protection and releases.

Plain Python (numpy, pandas, torch): nothing here imports Prefect or MLflow, so every piece can be
called from a notebook or a test; `flows.api.HealthGym` is the notebook entry point.
"""
