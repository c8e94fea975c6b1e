"""The model-folder upgrader: the one place that knows older folder formats.

`HealthGymModel.load` reads every folder through `read_folder`, which returns the config and the
encoder state in today's format (`diffusion.encoding.FORMAT`), converting a folder of an older
format in memory, or refusing it with a message that says why and what to do. Format 1 (the
encoder state as one dictionary per column, decoding parameters mixed in) converts exactly;
format-1 folders whose spikes were thresholded (saved before spikes were ranked) are refused.
`upgrade_folder(old, new)` writes a converted copy. The codecs carry no compatibility branch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from diffusion.config import Config
from diffusion.encoding import FORMAT
from diffusion.errors import InputError

# settings added after the first model folders were written, with the value those folders used
LEGACY_DEFAULTS = {
    "diffusion.prediction": "eps",
    "model.self_condition": False,
    "model.position": False,
    "model.kind": "unet",  # folders saved before the engine was a setting hold U-Net weights
    "encoding.repeat_share": 0.0,  # ... and an encoder without repeat channels
    "encoding.calibrate": False,
    "train.min_steps": 0,  # ... and planned by passes alone
    "pipeline.min_holdout_patients": 0,  # so a release re-draws the holdout the folder's model never saw
    "sampling.min_logsnr": None,  # ... and sampled over the whole log-SNR range, so a seed gives the same patients
    "diffusion.discrete": "regression",  # ... and their discrete channels regressed like numbers
    "model.patch": 1,  # ... and one visit per transformer token
}


class UpgradeError(InputError):
    """A model folder this version cannot read."""


def folder_format(encoder_raw: dict[str, Any]) -> int:
    """The format of an encoder state: its "format" key; states written before it existed are format 1."""
    return int(encoder_raw.get("format", 1))


def read_folder(folder: Path) -> tuple[Config, dict[str, Any]]:
    """The folder's config (settings it predates filled with the values it used) and its
    encoder state in the current format."""
    raw_config = json.loads((folder / "config.json").read_text())
    legacy = {k: v for k, v in LEGACY_DEFAULTS.items() if k.split(".")[1] not in raw_config.get(k.split(".")[0], {})}
    config = Config.from_dict(raw_config).with_overrides(legacy) if legacy else Config.from_dict(raw_config)
    encoder = json.loads((folder / "encoder.json").read_text())
    version = folder_format(encoder)
    if version == 1:
        encoder = encoder_v1_to_v2(encoder, folder)
    elif version != FORMAT:
        raise UpgradeError(
            f"Model folder {folder} has format {version}; this version of Health Gym reads formats 1 to {FORMAT}. "
            "Use the Health Gym version that wrote it, or retrain the model."
        )
    return config, encoder


def _codec_v1(num: dict[str, Any]) -> dict[str, Any]:
    keys = ("transform", "lower", "delta", "lam", "lo", "hi", "vmin", "vmax", "integer")
    return {**{k: num[k] for k in keys}, "decimals": num.get("decimals"), "quantiles": num.get("quantiles")}


def _deviations_v1(num: dict[str, Any]) -> dict[str, Any] | None:
    if "dev_scale" not in num:
        return None
    table = num.get("dev_quantiles") or {}
    return {
        "scale": num["dev_scale"],
        "bound": num["dev_bound"],
        "level_lo": num.get("level_lo", -1.0),
        "level_hi": num.get("level_hi", 1.0),
        "quantiles": num.get("deviation_quantiles"),
        "normal_x": table.get("x"),
        "normal_u": table.get("u"),
    }


def _decoding_v1(num: dict[str, Any], name: str, folder: Path) -> dict[str, Any]:
    if "spike_threshold" in num:
        raise UpgradeError(
            f"Model folder {folder} decodes {name}'s spikes by a threshold, a rule this version no longer has "
            "(spikes are now ranked so a decoded set holds its share exactly). Retrain the model."
        )
    return {
        "generated_quantiles": num.get("generated_quantiles"),
        "generated_deviation_quantiles": num.get("generated_deviation_quantiles"),
        "smoothing": num.get("smoothing", 0.0),
        "spike_sign": num.get("spike_sign"),
        "spike_share": num.get("spike_share", 0.0),
    }


def encoder_v1_to_v2(old: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A format-1 encoder state in format 2: codecs, deviations and labels per column, the
    decoding parameters gathered in one place. Exact: the converted state decodes identically."""
    try:
        columns, numbers, thresholds, penalties = {}, {}, {}, {}
        for name, e in old["columns"].items():
            num = e.get("numeric")
            columns[name] = {
                "dtype": e["dtype"],
                "missing_rate": e.get("missing_rate"),
                "number": None if num is None else _codec_v1(num),
                "deviations": None if num is None else _deviations_v1(num),
                "labels": e.get("values"),
                "lag1_rank": e.get("lag1_rank"),
                "lag1": e.get("lag1"),
                "stay": e.get("stay"),
            }
            if num is not None:
                numbers[name] = _decoding_v1(num, name, folder)
            if "missing_threshold" in e:
                thresholds[name] = e["missing_threshold"]
            if "switch_penalty" in e:
                penalties[name] = e["switch_penalty"]
        t = old["time"]
        time = {
            "dtype": t["dtype"],
            "integer": t["integer"],
            "t0_constant": t["t0_constant"],
            "t0": None,
            "gap": None,
            "gap_deviations": None,
        }
        for key, channel in (("t0", "__t0__"), ("gap", "__gap__")):
            if t.get(key) is not None:
                time[key] = _codec_v1(t[key])
                numbers[channel] = _decoding_v1(t[key], channel, folder)
        if t.get("gap") is not None:
            time["gap_deviations"] = _deviations_v1(t["gap"])
        return {
            "format": 2,
            "length": old["length"],
            "length_counts": old["length_counts"],
            "columns": columns,
            "time": time,
            "id_integer": old["id_integer"],
            "id_dtype": old["id_dtype"],
            "column_order": old["column_order"],
            "patient_levels": bool(old.get("patient_levels", False)),
            "discrete_scale": float(old.get("discrete_scale", 1.0)),
            "decoding": {"missing_threshold": thresholds, "switch_penalty": penalties, "numbers": numbers},
        }
    except KeyError as exc:
        raise UpgradeError(
            f"Model folder {folder} has an encoder state this version cannot read (it lacks {exc}); "
            "it predates the formats Health Gym converts. Retrain the model."
        ) from None


def upgrade_folder(old: Path, new: Path) -> Path:
    """Write a copy of folder `old` in the current format at `new` (which must not exist)."""
    if new.exists():
        raise FileExistsError(f"{new} already exists; refusing to overwrite it.")
    config, encoder = read_folder(old)
    shutil.copytree(old, new)
    config.save(new / "config.json")
    (new / "encoder.json").write_text(json.dumps(encoder, indent=1))
    return new
