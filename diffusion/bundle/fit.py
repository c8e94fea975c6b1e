"""One call from a training extract to a fitted model: protect -> fit encoder -> encode -> train U-Net -> calibrate."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from diffusion.bundle.folder import HealthGymModel
from diffusion.bundle.meta import ModelMeta
from diffusion.config import Config, resolve_network
from diffusion.data.dates import Dating, has_dates, numeric_schema, to_numbers
from diffusion.data.schema import Schema
from diffusion.encoding import Encoded, TrajectoryEncoder
from diffusion.model.build import build_denoiser
from diffusion.model.schedule import GaussianDiffusion
from diffusion.privacy.ids import IdScheme
from diffusion.privacy.protection import Protection
from diffusion.training.loop import TrainResult, train
from diffusion.training.memorisation import MemorisationProbe
from diffusion.training.parallel import world

log = logging.getLogger(__name__)


def memorisation_probe(encoder: TrajectoryEncoder, schema: Schema, config: Config):
    """The factory `train` calls with (network, training patients, validation patients): a probe
    that generates `train.memorisation_patients` patients (the release's sampler, fixed noise) and
    scores them."""

    def sample(net: torch.nn.Module, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        model = HealthGymModel(config=config, schema=schema, encoder=encoder, net=net, device=next(net.parameters()).device)
        x = model.sample_tensor(n, seed=seed, steps=config.train.memorisation_sampling_steps or None)
        return x, encoder.draw_lengths(n, np.random.default_rng(seed))  # the lengths sample_tensor drew for this seed

    def build(net: torch.nn.Module, train: Encoded, validation: Encoded) -> MemorisationProbe:
        return MemorisationProbe(
            sample, train, validation, patients=config.train.memorisation_patients, seed=config.pipeline.seed + 7
        )

    return build


def fit(
    df: pd.DataFrame,
    schema: Schema,
    config: Config,
    *,
    workdir: Path | None = None,
    callback: Callable[[str, dict[str, Any]], None] | None = None,
    progress: bool = True,
    real_ids: pd.Series | None = None,
    calibrate: bool = True,
) -> tuple[HealthGymModel, TrainResult]:
    """Protect `df` (the training patients only; `diffusion.privacy.protection`), fit the encoder on it
    and train the denoiser, watching memorisation; then, unless `calibrate` is false,
    `calibrate_decoding` (when configured).
    Synthetic ids will never equal any of `real_ids` (default: the training patients' ids)."""
    torch.manual_seed(config.pipeline.seed)
    raw = df
    df, schema, protection, dating = _protected(df, schema, config)
    enc = config.encoding
    encoder = TrajectoryEncoder(
        schema,
        patient_levels=enc.patient_levels,
        discrete_scale=enc.discrete_scale,
        deviations=enc.deviations,
        k=config.privacy.k,
        repeat_share=enc.repeat_share,
    ).fit(df)
    data = encoder.encode(df)
    config = _resolved_network(config, data)
    net = build_denoiser(len(encoder.channels), config.model)
    diffusion = GaussianDiffusion.from_config(
        config.diffusion, encoder.discrete_groups, encoder.state.discrete_scale, encoder.static_channels
    )
    state, result = train(
        net,
        diffusion,
        data,
        config.train,
        seed=config.pipeline.seed,
        workdir=workdir,
        callback=callback,
        progress=progress,
        probe=memorisation_probe(encoder, schema, config),
    )
    net.load_state_dict(state)
    net = net.to("cpu").eval()
    meta = ModelMeta(
        training=result,
        patients=len(data),
        parameters=sum(p.numel() for p in net.parameters()),
        protection=protection.to_dict(),
        ids=IdScheme.fit(raw[schema.id] if real_ids is None else real_ids).to_dict(),
        dating=dating.to_dict() if dating is not None else None,
    )
    model = HealthGymModel(config=config, schema=schema, encoder=encoder, net=net, meta=meta)
    if calibrate and world()[0] == 0:  # under DDP the other ranks' models are not kept
        calibrate_decoding(model)
    return model, result


def _resolved_network(config: Config, data: Encoded) -> Config:
    """`config` with the automatic visits per token and width resolved from the training patients."""
    resolved = resolve_network(config, len(data), float(np.median(data.lengths)))
    if config.model.base_channels == 0:
        log.info("Network width for %d training patients: %d base channels.", len(data), resolved.model.base_channels)
    return resolved


def _protected(df: pd.DataFrame, schema: Schema, config: Config) -> tuple[pd.DataFrame, Schema, Protection, Dating | None]:
    """(the frame the engine sees, its schema, the value protection, the date coarsening or None):
    dates as numbers (`diffusion.data.dates`), values protected (`diffusion.privacy.protection`)."""
    raw, dated = df, schema
    df, schema = to_numbers(df, schema), numeric_schema(schema)
    protection = Protection.fit(df, schema, config.privacy.k, config.privacy.rare)
    schema = protection.schema(schema)
    df = protection.apply(df, schema, seed=config.pipeline.seed)
    dating = Dating.fit(raw, df, dated, config.privacy.k) if has_dates(dated) else None
    return df, schema, protection, dating


def calibrate_decoding(model: HealthGymModel) -> HealthGymModel:
    """Calibrate the model's decoding in place (`encoding.calibrate`; skipped when off or done):
    the post-hoc step that runs after training, so a trained network can be kept before it."""
    enc = model.config.encoding
    if not enc.calibrate or model.meta.calibration is not None:
        return model
    n = min(enc.calibration_patients, 8 * model.meta.patients)
    log.info("Calibrating decoding on %d generated patients.", n)
    report = model.calibrate(
        n,
        seed=model.config.pipeline.seed + 1,
        progress=lambda done, total: log.info("Calibration sample: %d/%d patients.", done, total),
    )
    model.meta = model.meta.with_calibration(report)
    for what, key in (("missing rate", "missing"), ("consecutive visits with the same category", "persistence")):
        if report.get(key):
            log.info(
                "Decoding calibrated: %s (real / generated / decoded) %s.",
                what,
                ", ".join(f"{name} {p['real']:.3f} / {p['before']:.3f} / {p['after']:.3f}" for name, p in report[key].items()),
            )
    if report.get("marginals"):
        log.info(
            "Decoding calibrated: numbers mapped onto their real marginals (Kolmogorov-Smirnov distance before) %s.",
            ", ".join(f"{name} {p['ks_before']:.3f}" for name, p in report["marginals"].items()),
        )
        smoothed = {name: p for name, p in report["marginals"].items() if "smoothing" in p}
        if smoothed:
            log.info(
                "Decoding calibrated: deviations smoothed so values persist as in the real patients (rank lag-1 "
                "real / generated / decoded, smoothing) %s.",
                ", ".join(
                    f"{name} {p['lag1_rank_real']:.3f} / {p['lag1_rank_before']:.3f} / {p['lag1_rank_after']:.3f}, "
                    f"{p['smoothing']:.3f}"
                    for name, p in smoothed.items()
                ),
            )
        spiked = {name: p for name, p in report["marginals"].items() if p.get("spikes")}
        if spiked:
            log.info(
                "Decoding calibrated: isolated spikes so extreme values come and go as in the real patients "
                "(Pearson lag-1 real / generated / decoded, share of visits) %s.",
                ", ".join(
                    f"{name} {p['lag1_real']:.3f} / {p['lag1_before']:.3f} / {p['lag1_after']:.3f}, {p['spikes']:.4f}"
                    for name, p in spiked.items()
                ),
            )
    return model
