"""Typed schemas for the config tree in conf/: each key's type and, where it has one, its range.

The values live in conf/ (each option's YAML); a key's type and range are written here once.
Each option of a config group starts its defaults list with its schema, e.g. conf/loss/wgan_gp.yaml
has `defaults: [/schema/loss/wgan_gp@_here_]` (ganctl.cli.registry stores them), so a misspelt key
or a wrong type fails while Hydra composes the config; ganctl.config.ranges checks the ranges
before any work starts.

    batch_size: int = ranged(AT_LEAST_1)    # typed int, refused below 1
"""
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, List, Optional

from omegaconf import MISSING


@dataclass(frozen=True)
class Rule:
    """What a value must be, in words for the error line, and the test."""
    says: str
    ok: Callable[[Any], bool]


def ranged(rule: Rule):
    """A schema field (its value comes from conf/) whose value must pass `rule`."""
    return field(default=MISSING, metadata={"rule": rule})


def optional(rule: Rule) -> Rule:
    return Rule(f"null or {rule.says}", lambda v: v is None or rule.ok(v))


AT_LEAST_0 = Rule(">= 0", lambda v: v >= 0)
AT_LEAST_1 = Rule(">= 1", lambda v: v >= 1)
POSITIVE = Rule("> 0", lambda v: v > 0)
FRACTION = Rule("in [0, 1)", lambda v: 0 <= v < 1)
SEED = Rule("in [0, 2**32)", lambda v: 0 <= v < 2**32)  # what NumPy's seed takes; torch takes more
DEVICE = Rule("auto, cpu, cuda, cuda:<index> or mps", lambda v: bool(re.fullmatch(r"auto|cpu|mps|(cuda|xpu)(:\d+)?", v)))
BETAS = Rule("two values in [0, 1)", lambda v: len(v) == 2 and all(0 <= b < 1 for b in v))
WIDTHS = Rule("widths >= 1", lambda v: all(w >= 1 for w in v))
# trainer.compile: none, or a torch.compile mode (reduce-overhead captures CUDA graphs).
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


class Noise(str, Enum):
    normal = "normal"
    uniform = "uniform"


class Split(str, Enum):
    train = "train"
    test = "test"
    all = "all"


# --- model -----------------------------------------------------------------------------------
@dataclass
class MLPGeneratorConfig:
    _target_: str = MISSING
    hidden: List[int] = ranged(WIDTHS)
    norm: str = MISSING
    embed_dim: int = ranged(AT_LEAST_1)


@dataclass
class MLPDiscriminatorConfig:
    _target_: str = MISSING
    hidden: List[int] = ranged(WIDTHS)
    dropout: float = ranged(FRACTION)
    embed_dim: int = ranged(AT_LEAST_1)
    norm: str = MISSING
    projection: bool = MISSING
    spectral_norm: bool = MISSING


@dataclass
class DCGANGeneratorConfig:
    _target_: str = MISSING
    ngf: int = ranged(AT_LEAST_1)
    embed_dim: int = ranged(AT_LEAST_1)
    cbn: bool = MISSING
    codes: int = ranged(Rule("0 or >= 2", lambda v: v == 0 or v >= 2))
    upsample: str = MISSING
    cond: str = MISSING
    noise_injection: bool = MISSING


@dataclass
class DCGANDiscriminatorConfig:
    _target_: str = MISSING
    ndf: int = ranged(AT_LEAST_1)
    norm: str = MISSING
    per_sample_norm: str = MISSING
    mbstd: bool = MISSING
    spectral_norm: bool = MISSING
    pack: int = ranged(AT_LEAST_1)
    cond: str = MISSING


@dataclass
class ResNetGeneratorConfig:
    _target_: str = MISSING
    ch: int = ranged(AT_LEAST_1)


@dataclass
class ResNetDiscriminatorConfig:
    _target_: str = MISSING
    ch: int = ranged(AT_LEAST_1)
    spectral_norm: bool = MISSING


@dataclass
class ModelConfig:
    name: str = MISSING
    conditional: Optional[bool] = MISSING  # null: as the data (labels where it has classes)
    z_dim: int = ranged(AT_LEAST_1)
    init: str = MISSING
    aux_weight: float = ranged(AT_LEAST_0)
    lr: float = ranged(POSITIVE)
    betas: List[float] = ranged(BETAS)
    G: Any = MISSING
    D: Any = MISSING


@dataclass
class MLPModelConfig(ModelConfig):
    G: MLPGeneratorConfig = field(default_factory=MLPGeneratorConfig)
    D: MLPDiscriminatorConfig = field(default_factory=MLPDiscriminatorConfig)


@dataclass
class DCGANModelConfig(ModelConfig):
    clusters: int = ranged(Rule("0 or 2 to 1000", lambda v: v == 0 or 2 <= v <= 1000))
    G: DCGANGeneratorConfig = field(default_factory=DCGANGeneratorConfig)
    D: DCGANDiscriminatorConfig = field(default_factory=DCGANDiscriminatorConfig)


@dataclass
class ResNetModelConfig(ModelConfig):
    G: ResNetGeneratorConfig = field(default_factory=ResNetGeneratorConfig)
    D: ResNetDiscriminatorConfig = field(default_factory=ResNetDiscriminatorConfig)


# --- loss ------------------------------------------------------------------------------------
@dataclass
class LossConfig:
    _target_: str = MISSING
    n_critic: int = ranged(AT_LEAST_1)
    feature_matching: float = ranged(AT_LEAST_0)
    r1: float = ranged(AT_LEAST_0)
    r1_every: int = ranged(AT_LEAST_1)


@dataclass
class BCELossConfig(LossConfig):
    saturating: bool = MISSING


@dataclass
class WGANLossConfig(LossConfig):
    clip: float = ranged(POSITIVE)


@dataclass
class WGANGPLossConfig(LossConfig):
    gp_weight: float = ranged(AT_LEAST_0)


# --- dataset ---------------------------------------------------------------------------------
@dataclass
class DatasetConfig:
    _target_: str = MISSING
    root: str = MISSING
    limit: Optional[int] = ranged(optional(AT_LEAST_1))


@dataclass
class TorchvisionDatasetConfig(DatasetConfig):
    download: bool = MISSING
    split: Split = MISSING


@dataclass
class FolderDatasetConfig(DatasetConfig):
    img_size: int = MISSING
    channels: int = ranged(Rule("1 (grey) or 3 (RGB)", lambda v: v in (1, 3)))
    num_workers: int = ranged(AT_LEAST_0)
    cache: bool = MISSING


# --- optimizer -------------------------------------------------------------------------------
@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr_g: float = ranged(POSITIVE)
    lr_d: float = ranged(POSITIVE)
    G: Any = MISSING
    D: Any = MISSING


@dataclass
class AdamConfig(OptimizerConfig):
    betas: List[float] = ranged(BETAS)
    fused: Optional[bool] = MISSING


@dataclass
class AdamWConfig(AdamConfig):
    weight_decay: float = ranged(AT_LEAST_0)


@dataclass
class RMSpropConfig(OptimizerConfig):
    alpha: float = MISSING


# --- trainer, eval and the commands ------------------------------------------------------------
@dataclass
class TrainerConfig:
    epochs: int = ranged(AT_LEAST_1)
    max_steps: Optional[int] = ranged(optional(AT_LEAST_1))
    batch_size: int = ranged(AT_LEAST_1)
    seed: int = ranged(SEED)
    device: str = ranged(DEVICE)
    precision: Precision = MISSING
    noise: Noise = MISSING
    label_smoothing: float = ranged(FRACTION)
    ema_decay: float = ranged(FRACTION)
    ema_warmup: bool = MISSING
    ema_bn_batches: int = ranged(AT_LEAST_0)
    log_every: int = ranged(AT_LEAST_1)
    sample_every: int = ranged(AT_LEAST_1)
    ckpt_every: int = ranged(AT_LEAST_1)
    keep_ckpts: int = ranged(AT_LEAST_0)
    progress: bool = MISSING
    deterministic: bool = MISSING
    eval_every: Optional[int] = ranged(optional(AT_LEAST_1))
    eval_n: int = ranged(Rule(">= 100", lambda v: v >= 100))
    sync_bn: bool = MISSING
    channels_last: bool = MISSING
    compile: str = ranged(Rule("one of " + ", ".join(COMPILE_MODES), lambda v: v in COMPILE_MODES))


class Backbone(str, Enum):
    classifier = "classifier"
    inception = "inception"


@dataclass
class EvalConfig:
    backbone: Backbone = MISSING
    inception_weights: Optional[str] = MISSING
    real_n: Optional[int] = ranged(optional(Rule(">= 4 (two halves)", lambda v: v >= 4)))


@dataclass
class AdaConfig:
    target: float = ranged(Rule("in (-1, 1)", lambda v: -1 < v < 1))
    interval: int = ranged(AT_LEAST_1)
    kimg: float = ranged(POSITIVE)


@dataclass
class AugmentConfig:
    policy: List[str] = MISSING
    translation: float = ranged(Rule("in (0, 0.5]", lambda v: 0 < v <= 0.5))
    cutout: float = ranged(Rule("in (0, 1]", lambda v: 0 < v <= 1))
    p: float = ranged(Rule("in (0, 1]", lambda v: 0 < v <= 1))
    ada: Optional[AdaConfig] = MISSING


@dataclass
class TrainConfig:
    resume: Optional[str] = MISSING
    optimized_metric: str = MISSING
    model: Any = MISSING
    loss: Any = MISSING
    dataset: Any = MISSING
    optimizer: Any = MISSING
    trainer: TrainerConfig = MISSING
    eval: EvalConfig = MISSING
    augment: AugmentConfig = MISSING


@dataclass
class SummaryConfig(TrainConfig):
    ckpt: Optional[str] = MISSING
    depth: int = ranged(AT_LEAST_1)


@dataclass
class SeedDeviceConfig:
    """conf/seed_device.yaml: the keys of the commands that draw or fit."""
    seed: int = ranged(SEED)
    device: str = ranged(DEVICE)


@dataclass
class SampleConfig(SeedDeviceConfig):
    ckpt: Optional[str] = MISSING
    label: Any = MISSING
    n: Optional[int] = MISSING
    out: Optional[str] = MISSING
    outputs: str = MISSING
    interpolate: Any = MISSING
    steps: int = MISSING
    spherical: bool = MISSING
    arithmetic: Optional[str] = MISSING


@dataclass
class RunGeneratorConfig:
    """The keys of the commands that read one generator from a run (eval, export)."""
    ckpt: Optional[str] = MISSING
    which: str = MISSING
    generator: str = MISSING
    outputs: str = MISSING


@dataclass
class EvalCommandConfig(RunGeneratorConfig, SeedDeviceConfig):
    n: int = MISSING
    eval: EvalConfig = MISSING


@dataclass
class ExportConfig(RunGeneratorConfig):
    format: str = MISSING
    out: Optional[str] = MISSING


@dataclass
class FitClassifierConfig(SeedDeviceConfig):
    dataset: Any = MISSING
    epochs: Optional[int] = ranged(optional(AT_LEAST_1))
    batch_size: Optional[int] = ranged(optional(AT_LEAST_1))
    refit: bool = MISSING
