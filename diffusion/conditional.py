"""The old home of conditional sampling, kept for MLflow models registered before `diffusion` was
split into sub-packages: their logged code imports `diffusion.conditional`, which a process that
already holds today's library resolves here. New code imports `diffusion.bundle.conditional`."""

from diffusion.bundle.conditional import parse_boost, sample_boosted, sample_where, select

__all__ = ["parse_boost", "sample_boosted", "sample_where", "select"]
