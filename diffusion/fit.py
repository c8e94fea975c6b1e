"""One call from a training extract to a fitted model: fit encoder -> encode -> train U-Net."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from diffusion.bundle import HealthGymModel
from diffusion.config import Config
from diffusion.encoding import TrajectoryEncoder
from diffusion.schedule import GaussianDiffusion
from diffusion.schema import Schema
from diffusion.training import TrainResult, train
from diffusion.unet import build_unet

log = logging.getLogger(__name__)


def fit(
    df: pd.DataFrame,
    schema: Schema,
    config: Config,
    *,
    workdir: Path | None = None,
    callback: Callable[[str, dict[str, Any]], None] | None = None,
    progress: bool = True,
) -> tuple[HealthGymModel, TrainResult]:
    """Fit the encoder on `df` (the training patients only) and train the denoiser on it."""
    torch.manual_seed(config.pipeline.seed)
    enc = config.encoding
    encoder = TrajectoryEncoder(schema, patient_levels=enc.patient_levels, discrete_scale=enc.discrete_scale, deviations=enc.deviations).fit(df)
    data = encoder.encode(df)
    net = build_unet(len(encoder.channels), config.model)
    diffusion = GaussianDiffusion.from_config(config.diffusion)
    state, result = train(
        net, diffusion, data, config.train, seed=config.pipeline.seed, workdir=workdir, callback=callback, progress=progress
    )
    net.load_state_dict(state)
    net = net.to("cpu").eval()
    meta = {"training": result.summary(), "patients": len(data), "parameters": sum(p.numel() for p in net.parameters())}
    model = HealthGymModel(config=config, schema=schema, encoder=encoder, net=net, meta=meta)
    if enc.calibrate:
        n = min(enc.calibration_patients, 8 * len(data))
        log.info("Calibrating decoding on %d generated patients.", n)
        report = model.calibrate(n, seed=config.pipeline.seed + 1, progress=lambda done, total: log.info(
            "Calibration sample: %d/%d patients.", done, total))
        meta["calibration"] = report
        for what, key in (("missing rate", "missing"), ("consecutive visits with the same category", "persistence")):
            if report.get(key):
                log.info("Decoding calibrated: %s (real / generated / decoded) %s.", what, ", ".join(
                    f"{name} {p['real']:.3f} / {p['before']:.3f} / {p['after']:.3f}" for name, p in report[key].items()))
        if report.get("marginals"):
            log.info("Decoding calibrated: numbers mapped onto their real marginals (Kolmogorov-Smirnov distance before) %s.",
                     ", ".join(f"{name} {p['ks_before']:.3f}" for name, p in report["marginals"].items()))
            smoothed = {name: p for name, p in report["marginals"].items() if "smoothing" in p}
            if smoothed:
                log.info("Decoding calibrated: deviations smoothed so values persist as in the real patients (rank lag-1 "
                         "real / generated / decoded, smoothing) %s.", ", ".join(
                             f"{name} {p['lag1_rank_real']:.3f} / {p['lag1_rank_before']:.3f} / {p['lag1_rank_after']:.3f}, "
                             f"{p['smoothing']:.3f}" for name, p in smoothed.items()))
            spiked = {name: p for name, p in report["marginals"].items() if p.get("spikes")}
            if spiked:
                log.info("Decoding calibrated: isolated spikes so extreme values come and go as in the real patients "
                         "(Pearson lag-1 real / generated / decoded, share of visits) %s.", ", ".join(
                             f"{name} {p['lag1_real']:.3f} / {p['lag1_before']:.3f} / {p['lag1_after']:.3f}, "
                             f"{p['spikes']:.4f}" for name, p in spiked.items()))
    return model, result
