"""The one typed configuration of a Health Gym run.

Every tunable setting is declared here, once, with its default. Flows, the CLI
(`--config FILE`, `--set section.key=value`) and deployments pass overrides down; the model
folder saves the resolved config beside the weights, so sampling reads it back and never
re-declares it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from diffusion.typed import ConfigError, build


@dataclass
class ModelConfig:
    """The denoiser: a 1-D temporal U-Net or a visit-token transformer."""

    # "transformer": each visit a token, attention over the patient's visits only, padding masked
    # out (diffusion.model.transformer), so labels and values persist as a trajectory; "unet":
    # convolutions over the padded time axis (diffusion.model.unet, the earlier engine)
    kind: Literal["unet", "transformer"] = "transformer"
    # 0 (auto): `auto_width` of the training patients, since a wide network reproduces a small
    # cohort's patients; the folder saves the resolved width. Raise it on a GPU for large cohorts.
    base_channels: int = 0
    channel_mults: tuple[int, ...] = (1, 2)
    blocks_per_level: int = 1
    attention: bool = True  # self-attention over time at the coarsest level
    dropout: float = 0.0
    time_embed_dim: int = 64
    # self-conditioning (Chen et al., Analog Bits): the network also sees its previous x0 estimate,
    # which settles missingness and labels consistently with the numbers (docs/decisions.md)
    self_condition: bool = True
    # the visit index as an input feature (U-Net: features over the time axis, refused under DP;
    # transformer: a sinusoidal index added to each visit's token): off, since absolute position
    # helps place individual training patients' visits and bought no fidelity (docs/decisions.md)
    position: bool = False
    depth: int = 3  # transformer: blocks (its token width is twice base_channels)
    heads: int = 4  # transformer: attention heads
    # transformer: consecutive visits per token, since the blocks run over length / patch tokens and
    # a long cohort's step costs what its tokens cost. 0 (auto): `auto_patch` of the training
    # patients' median number of visits; the folder saves the resolved value
    patch: int = 0


PATCH_TOKENS = 20  # `auto_patch` leaves the typical patient at least this many tokens


def auto_patch(median_visits: float) -> int:
    """Visits per transformer token for a cohort whose patients have `median_visits` visits (the
    median): `median_visits // PATCH_TOKENS`, at least one. The median, not the longest patient,
    since few visits per token cost a short patient its visit-to-visit detail."""
    return max(1, int(median_visits) // PATCH_TOKENS)


def auto_width(patients: int, patch: int = 1) -> int:
    """The base channels for a cohort of `patients` training patients: 2.2 x sqrt(n), rounded to a
    multiple of 8, within [16, 48]; times sqrt(patch) for tokens of `patch` visits, since a token
    carries that many visits' channels in and out."""
    base = min(48, max(16, 8 * round(2.2 * patients**0.5 / 8)))
    return int(8 * round(base * patch**0.5 / 8))


@dataclass
class EncodingConfig:
    """How patients become tensors (fitted on the training patients, saved with the model)."""

    # Temporal numbers split into a static per-patient level (the patient's mean, transformed
    # and scaled) and the visit's deviation from it, scaled by the cohort's typical within-patient
    # spread. Between-patient spread is usually far larger than visit-to-visit change, so without
    # this the denoiser's small errors become implausible visit-to-visit jumps.
    patient_levels: bool = True
    # binary, one-hot and missingness channels are coded as -/+ this (decoding reads only the
    # sign / the largest score). 0 (auto): the root-mean-square of the encoded numeric channels,
    # so noise hides categories and numbers alike and neither is settled long before the other.
    discrete_scale: float = 0.0
    # how a visit's deviation from its patient's level is coded: "linear" (divided by the cohort's
    # 99th-percentile |deviation|) or "quantile" (through its quantiles onto a normal shape, so a
    # heavy-tailed deviation becomes a Gaussian the denoiser can match)
    deviations: Literal["linear", "quantile"] = "linear"
    # after training, calibrate decoding on generated patients (`diffusion.encoding.calibration`:
    # missing rates, marginals, persistence of numbers and labels as in the training patients),
    # since the network alone gets their shape roughly but not exactly right
    calibrate: bool = True
    # the steps calibration runs; "spikes" (isolated extreme visits matching the Pearson lag-1) is
    # off: it did not improve the holdout discriminator (docs/decisions.md)
    calibration_steps: tuple[Literal["missingness", "values", "deviations", "smoothing", "spikes", "persistence"], ...] = (
        "missingness",
        "values",
        "deviations",
        "smoothing",
        "persistence",
    )
    # a temporal number (or the gap) whose value equals the previous visit's in at least this share
    # of consecutive visits gets a repeat channel the network generates (diffusion.encoding.repeats),
    # since a continuous channel never repeats a value exactly; 0: none
    repeat_share: float = 0.05
    # generated patients the calibration reads: 8 x the training patients, at most this many,
    # since the statistics it matches are cohort-wide and a small sample calibrates to its own luck
    calibration_patients: int = 2048


@dataclass
class DiffusionConfig:
    """The forward noise process and the training objective."""

    steps: int = 1000
    schedule: Literal["cosine", "linear"] = "cosine"
    x0_weight: float = 0.1  # weight of the (masked) x0 reconstruction term beside the main loss
    # what the network predicts: "v" (sqrt(abar) * noise - sqrt(1 - abar) * x0) weighs every noise
    # level's x0 error alike, so patient-level structure decided at high noise is learnt too;
    # "eps" (the noise) is the DDPM original
    prediction: Literal["v", "eps"] = "v"
    # binary, missingness, repeat and one-hot channels: "logits" reads the network's output there as
    # class logits trained by cross-entropy, its x0 estimate the expected code (CDTD's score
    # interpolation), so a label is a class given the trajectory; "masked" reads them so too but
    # diffuses the temporal ones by masking, each visit's class drawn once while sampling
    # (`diffusion.model.masking`); "regression" regresses the -/+ code like a number
    discrete: Literal["logits", "masked", "regression"] = "regression"


@dataclass
class TrainConfig:
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    max_steps: int = 20000
    # ... and at most this many passes over the training patients, per PASS_VISITS visits of the
    # median patient (`diffusion.training.loop.planned_steps`): a diffusion model trained on few
    # patients for many thousands of passes reproduces them, while a long patient holds several
    # short ones' worth of visit-to-visit changes to learn
    max_epochs: float = 1000.0
    # ... but at least this many steps (never beyond max_steps; 0: no floor): more updates for a
    # small cohort, whose passes are few steps each, watched by the validation loss and the
    # memorisation probe; off by default, since it sharpens some small cohorts and makes others
    # memorise (docs/decisions.md)
    min_steps: int = 0
    # a safety cap only: training stops on its own (patience, max_steps, max_epochs), and a run
    # that the clock stops is not reproducible (how far it got depends on the machine's load)
    max_minutes: float = 8.0
    ema_decay: float = 0.995
    grad_clip: float = 1.0
    warmup_steps: int = 200
    lr_schedule: Literal["cosine", "constant"] = "cosine"  # cosine: decay to 5% over the planned steps
    eval_every: int = 250  # steps between checks: validation loss, memorisation signal, best checkpoint
    # early stopping: checks without a better admissible checkpoint before training stops (0: never)
    patience: int = 6
    # at each check, generated patients are compared with training and validation patients
    # (diffusion.training.memorisation); a checkpoint whose generated patients lie nearer the training set
    # in more than this share of cases is not admissible (0.5 is fair, 1 is copying; the signal
    # is noisy with few validation patients, so the margin is wide)
    max_train_dcr_share: float = 0.7
    memorisation_patients: int = 128  # generated per check (0: no memorisation check)
    # the sampler's steps for those patients (0: sampling.steps): the probe judges the patients the
    # release's sampler would draw
    memorisation_sampling_steps: int = 0
    checkpoint_every: int = 1000  # steps between resumable checkpoints
    validation_fraction: float = 0.1  # training patients held out for the validation loss and memorisation
    min_validation_patients: int = 20  # ... but at least this many (at most a quarter of the training patients)
    # differentially private training (DP-SGD through Opacus, diffusion.training.dp): Poisson batches,
    # per-patient gradients clipped to dp_max_grad_norm, Gaussian noise sized so the planned steps
    # spend at most (dp_epsilon, dp_delta); 0 delta: min(1e-5, 1/(10 n)). The guarantee covers the
    # network's weights: under DP the final EMA weights are kept (no choice of checkpoint by
    # patients' data, no memorisation probe, no early stopping), the noise is drawn from fresh
    # entropy unless dp_seeded_noise (reproducible, but then the seed must stay secret)
    dp: bool = False
    dp_epsilon: float = 3.0
    dp_delta: float = 0.0
    dp_max_grad_norm: float = 1.0
    dp_seeded_noise: bool = False
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU and under DP
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0  # CPU threads for torch; 0 keeps torch's default (one per core)
    # data-parallel training (PyTorch DDP, flows.distributed): this many processes on this
    # node, launched by torchrun; batch_size stays the global batch, split between them, so the
    # plan (steps, learning rate) is the single-process one. 1: in this process.
    processes: int = 1
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: NCCL on CUDA, gloo on CPU
    log_every: int = 100


@dataclass
class SamplingConfig:
    # dpmpp2m: DPM-Solver++(2M), deterministic, a second-order step from the last two x0 estimates,
    # so few network calls suffice (docs/decisions.md compares it with DDIM); dpmpp2m-sde: its SDE
    # form, fresh noise (eta) at every step; ddim / ddpm: the respaced chain
    method: Literal["ddim", "ddpm", "dpmpp2m", "dpmpp2m-sde"] = "dpmpp2m"
    steps: int = 8  # sampling steps, network calls (ddpm uses the full chain when steps >= diffusion.steps)
    # DDIM (and dpmpp2m-sde) stochasticity: 0 is deterministic, 1 is ancestral (DDPM) noise on the
    # respaced chain (the SDE for dpmpp2m-sde), whose fresh noise corrects the denoiser's own errors
    eta: float = 1.0
    # dpmpp2m: the log-SNR its evenly spaced steps start from after the first (None: the schedule's
    # last, near -20 for the cosine schedule): below -6, x_t's data share is too small to need
    # steps of its own, so the steps go where the data is settled (docs/decisions.md)
    min_logsnr: float | None = -6.0
    batch_size: int = 512
    patients: int | None = None  # default: as many as the extract has


@dataclass
class GateConfig:
    """Pass/fail thresholds a release must meet (a data custodian's defaults).

    Each gate compares one measure of `evaluation` (the synthetic patients against real holdout
    patients the model never saw) with its threshold; `evaluation.catalog` says which measure,
    which way, and how: lag-1 and missing-rate gates allow their margin over the real-vs-real
    floor (training vs holdout patients), privacy gates read the lower end of the measure's
    95% interval. Privacy gates need real holdout patients; without them they are reported as
    "not evaluated", and they block the release unless `require_holdout` is false.
    """

    max_discriminator_auc: float = 0.85  # patient-level real-vs-synthetic classifier, cross-validated
    max_dcr_share: float = 0.55  # share closer to training than holdout (0.5 fair): its interval's lower end
    max_mia_auc: float = 0.55  # distance membership-inference attack (0.5 fair): its interval's lower end
    max_near_copy_share: float = 0.10  # synthetic patients nearer training than 95% of real ones (0.05 fair): lower end
    # share of synthetic patients equal to a training patient (at the recorded precision) beyond the
    # share of holdout patients that are: the lower end of its 95% interval. Identical trajectories
    # are common among real patients where values are few (binary outcomes, short visits)
    max_exact_copy_excess: float = 0.0
    max_exact_copies: int = -1  # an absolute cap on synthetic patients equal to a training patient (-1: none)
    min_quality_score: float = 0.7  # sdmetrics QualityReport, patients + visits tables
    min_static_consistency: float = 1.0  # share of synthetic patients whose static columns are constant
    min_time_order: float = 1.0  # share of synthetic patients whose times strictly increase
    min_in_bounds: float = 1.0  # share of values inside declared bounds and categories
    max_lag1_abs_diff: float = 0.2  # mean |lag-1 autocorrelation holdout - synthetic|, beyond the real-vs-real floor
    max_missing_rate_diff: float = 0.1  # largest |missing rate holdout - synthetic|, beyond the real-vs-real floor
    # how far (log ratio) the worst static subgroup's share-ratio interval lies outside the
    # coverage band (evaluation.coverage); 0: blocks on any evidence of a subgroup off its share
    max_coverage_outside: float = 0.0
    require_holdout: bool = True  # gates that need a holdout block the release when it is missing


@dataclass
class EvaluationConfig:
    seed: int = 0
    discriminator_folds: int = 5  # folds of the boosted-features detector
    # the sequence detector (evaluation.sequence): folds, training steps per fold, and most
    # patients a side it reads (a fixed step count keeps its cost flat in the cohort's size)
    sequence_folds: int = 3
    sequence_steps: int = 200
    sequence_patients: int = 2000
    privacy_subsample: int = 2000  # most patients per set in the distance privacy measures (ratio kept)
    # most patients per set (training, synthetic, holdout) the fidelity, detection and utility
    # measures read, drawn at random (seeded): beyond it their precision exceeds what the gates
    # need and the time would grow with the cohort; validity and coverage read every patient
    max_patients: int = 10000
    sdmetrics_privacy_rows: int = 500  # num_rows_subsample for sdmetrics' DCR metrics
    trend_window: int = 3  # visits in the moving average that splits trend from cycle
    # static subgroups (a label of a static column) held by at least this share of real patients
    # must appear at 1/band to band times their real share (evaluation.coverage)
    coverage_min_share: float = 0.01
    coverage_band: float = 1.25
    example_patients: int = 6  # synthetic trajectories drawn in the report
    gates: GateConfig = field(default_factory=GateConfig)
    primary_metric: str = "discriminator_auc"  # lower is better; decides champion vs challenger


@dataclass
class PipelineConfig:
    holdout_fraction: float = 0.2  # real patients the model never sees (fidelity, privacy and utility checks)
    # ... but at least this many (at most 40% of the patients): the holdout is the yardstick of
    # every fidelity and privacy measure, and a dozen patients make a noisy one
    min_holdout_patients: int = 40
    seed: int = 0


@dataclass
class PrivacyConfig:
    """Value protection applied to the training patients before anything is fitted on them."""

    # k-anonymous tails: numbers (and first times, gaps, visit counts) are cut to the value of
    # the k-th most extreme patient on each side, patient levels and deviation bounds likewise,
    # so no released value and no stored statistic lies beyond what k patients share
    k: int = 5
    # a category seen in fewer than k training patients: "resample" (replaced by a common label
    # drawn at the training frequencies) or "merge" (released as the label _RARE_)
    rare: Literal["resample", "merge"] = "resample"


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    # ---- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def flat(self) -> dict[str, Any]:
        """`section.key -> value`, for logging as MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = value

        walk("", self.to_dict())
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "Config":
        return build(cls, raw or {}, "", _check)

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"Config file {path} does not exist.")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Config file {path} is not valid YAML/JSON: {exc}.") from None
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"Config file {path} must hold a mapping of sections (model, train, ...).")
        return cls.from_dict(raw)

    def with_overrides(self, assignments: list[str] | dict[str, Any]) -> "Config":
        """A copy with `section.key=value` overrides applied (values parsed as YAML scalars)."""
        raw = self.to_dict()
        items = assignments.items() if isinstance(assignments, dict) else [_split(a) for a in assignments]
        for key, value in items:
            parts = key.split(".")
            node = raw
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"Unknown config key '{key}' (known keys: {', '.join(sorted(self.flat()))}).")
                node = node[part]
            if parts[-1] not in node or isinstance(node[parts[-1]], dict):
                raise ConfigError(f"Unknown config key '{key}' (known keys: {', '.join(sorted(self.flat()))}).")
            node[parts[-1]] = value
        return Config.from_dict(raw)


def _split(assignment: str) -> tuple[str, Any]:
    if "=" not in assignment:
        raise ConfigError(f"Override '{assignment}' must look like section.key=value (e.g. diffusion.steps=200).")
    key, text = assignment.split("=", 1)
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _check(obj: Any, prefix: str) -> None:
    """Range checks that make a bad value fail at parse time, not deep inside training."""
    problems = []
    if isinstance(obj, DiffusionConfig):
        if obj.steps < 2:
            problems.append("diffusion.steps must be at least 2")
    if isinstance(obj, EncodingConfig):
        if not 0 <= obj.discrete_scale <= 1:
            problems.append("encoding.discrete_scale must be in [0, 1] (0: auto)")
        if obj.calibration_patients < 1:
            problems.append("encoding.calibration_patients must be at least 1")
    if isinstance(obj, SamplingConfig):
        if obj.steps < 1:
            problems.append("sampling.steps must be at least 1")
    if isinstance(obj, TrainConfig):
        if obj.batch_size < 1 or obj.max_steps < 1 or obj.min_steps < 0:
            problems.append("train.batch_size and train.max_steps must be positive, train.min_steps at least 0")
        if obj.max_minutes <= 0:
            problems.append("train.max_minutes must be positive")
        if not 0 <= obj.validation_fraction < 0.5:
            problems.append("train.validation_fraction must be in [0, 0.5)")
        if obj.max_epochs <= 0 or obj.patience < 0 or obj.memorisation_patients < 0 or obj.min_validation_patients < 0:
            problems.append(
                "train.max_epochs must be positive; train.patience, train.memorisation_patients and "
                "train.min_validation_patients at least 0"
            )
        if obj.dp and (obj.dp_epsilon <= 0 or obj.dp_delta < 0 or obj.dp_delta >= 1 or obj.dp_max_grad_norm <= 0):
            problems.append("train.dp_epsilon and train.dp_max_grad_norm must be positive, train.dp_delta in [0, 1)")
        if obj.processes < 1:
            problems.append("train.processes must be at least 1")
        if obj.memorisation_sampling_steps < 0:
            problems.append("train.memorisation_sampling_steps must be 0 (sampling.steps) or more")
        if obj.dp and obj.processes > 1:
            problems.append(
                "train.dp runs in one process: set train.processes=1 (Opacus's accountant sees one process's batches)"
            )
        if not 0.5 <= obj.max_train_dcr_share <= 1:
            problems.append("train.max_train_dcr_share must be in [0.5, 1]")
    if isinstance(obj, PipelineConfig) and not 0 <= obj.holdout_fraction < 0.9:
        problems.append("pipeline.holdout_fraction must be in [0, 0.9)")
    if isinstance(obj, PipelineConfig) and obj.min_holdout_patients < 0:
        problems.append("pipeline.min_holdout_patients must be at least 0")
    if isinstance(obj, PrivacyConfig):
        if obj.k < 1:
            problems.append("privacy.k must be at least 1")
    if isinstance(obj, ModelConfig) and (0 < obj.base_channels < 8 or obj.base_channels < 0 or not obj.channel_mults):
        problems.append("model.base_channels must be 0 (auto) or >= 8, and model.channel_mults non-empty")
    if isinstance(obj, ModelConfig) and obj.patch < 0:
        problems.append("model.patch must be 0 (auto) or at least 1 visit per token")
    if problems:
        raise ConfigError("; ".join(problems) + ".")


def resolve_network(config: Config, patients: int, median_visits: float) -> Config:
    """`config` with the automatic visits per token (from the training patients' median visits)
    and width (from their number, and the token's visits) resolved; fit saves it so, so loading
    rebuilds the same network."""
    if config.model.patch == 0:
        config = config.with_overrides({"model.patch": auto_patch(median_visits)})
    if config.model.base_channels == 0:
        patch = config.model.patch if config.model.kind == "transformer" else 1
        config = config.with_overrides({"model.base_channels": auto_width(patients, patch)})
    return config
