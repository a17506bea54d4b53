"""Typed schemas for the config tree in conf/.

Each option of a config group starts its defaults list with its schema, e.g. conf/loss/wgan_gp.yaml
has `defaults: [/schema/loss/wgan_gp@_here_]`, so a misspelt key or a wrong type fails while Hydra
composes the config, before any work starts. Only entry points (cli, train, sample) import this.
"""
import importlib.resources
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


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
# The values live in conf/ (each option's YAML); these classes only type the keys, so that a
# misspelt key or a wrong type is refused while Hydra composes the config.
@dataclass
class MLPGeneratorConfig:
    _target_: str = MISSING
    hidden: List[int] = MISSING
    norm: str = MISSING
    embed_dim: int = MISSING


@dataclass
class MLPDiscriminatorConfig:
    _target_: str = MISSING
    hidden: List[int] = MISSING
    dropout: float = MISSING
    embed_dim: int = MISSING
    norm: str = MISSING
    projection: bool = MISSING
    spectral_norm: bool = MISSING


@dataclass
class DCGANGeneratorConfig:
    _target_: str = MISSING
    ngf: int = MISSING
    embed_dim: int = MISSING
    cbn: bool = MISSING
    codes: int = MISSING
    upsample: str = MISSING
    cond: str = MISSING
    noise_injection: bool = MISSING


@dataclass
class DCGANDiscriminatorConfig:
    _target_: str = MISSING
    ndf: int = MISSING
    norm: str = MISSING
    per_sample_norm: str = MISSING
    mbstd: bool = MISSING
    spectral_norm: bool = MISSING
    pack: int = MISSING
    cond: str = MISSING


@dataclass
class ResNetGeneratorConfig:
    _target_: str = MISSING
    ch: int = MISSING


@dataclass
class ResNetDiscriminatorConfig:
    _target_: str = MISSING
    ch: int = MISSING
    spectral_norm: bool = MISSING


@dataclass
class ModelConfig:
    name: str = MISSING
    conditional: Optional[bool] = MISSING  # null: as the data (labels where it has classes)
    z_dim: int = MISSING
    init: str = MISSING
    aux_weight: float = MISSING
    lr: float = MISSING
    betas: List[float] = MISSING
    G: Any = MISSING
    D: Any = MISSING


@dataclass
class MLPModelConfig(ModelConfig):
    G: MLPGeneratorConfig = field(default_factory=MLPGeneratorConfig)
    D: MLPDiscriminatorConfig = field(default_factory=MLPDiscriminatorConfig)


@dataclass
class DCGANModelConfig(ModelConfig):
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
    n_critic: int = MISSING
    feature_matching: float = MISSING
    r1: float = MISSING
    r1_every: int = MISSING


@dataclass
class BCELossConfig(LossConfig):
    saturating: bool = MISSING


@dataclass
class WGANLossConfig(LossConfig):
    clip: float = MISSING


@dataclass
class WGANGPLossConfig(LossConfig):
    gp_weight: float = MISSING


# --- dataset ---------------------------------------------------------------------------------
@dataclass
class DatasetConfig:
    _target_: str = MISSING
    root: str = MISSING
    limit: Optional[int] = MISSING


@dataclass
class TorchvisionDatasetConfig(DatasetConfig):
    download: bool = MISSING
    split: Split = MISSING


@dataclass
class FolderDatasetConfig(DatasetConfig):
    img_size: int = MISSING
    channels: int = MISSING
    num_workers: int = MISSING
    cache: bool = MISSING


# --- optimizer -------------------------------------------------------------------------------
@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr_g: float = MISSING
    lr_d: float = MISSING
    G: Any = MISSING
    D: Any = MISSING


@dataclass
class AdamConfig(OptimizerConfig):
    betas: List[float] = MISSING
    fused: Optional[bool] = MISSING


@dataclass
class AdamWConfig(AdamConfig):
    weight_decay: float = MISSING


@dataclass
class RMSpropConfig(OptimizerConfig):
    alpha: float = MISSING


# --- trainer, eval and the commands ------------------------------------------------------------
@dataclass
class TrainerConfig:
    epochs: int = MISSING
    max_steps: Optional[int] = MISSING
    batch_size: int = MISSING
    seed: int = MISSING
    device: str = MISSING
    precision: Precision = MISSING
    noise: Noise = MISSING
    label_smoothing: float = MISSING
    ema_decay: float = MISSING
    ema_warmup: bool = MISSING
    ema_bn_batches: int = MISSING
    log_every: int = MISSING
    sample_every: int = MISSING
    ckpt_every: int = MISSING
    keep_ckpts: int = MISSING
    progress: bool = MISSING
    deterministic: bool = MISSING
    eval_every: Optional[int] = MISSING
    eval_n: int = MISSING
    sync_bn: bool = MISSING
    channels_last: bool = MISSING
    compile: str = MISSING


class Backbone(str, Enum):
    classifier = "classifier"
    inception = "inception"


@dataclass
class EvalConfig:
    backbone: Backbone = MISSING
    inception_weights: Optional[str] = MISSING
    real_n: Optional[int] = MISSING


@dataclass
class AdaConfig:
    target: float = MISSING
    interval: int = MISSING
    kimg: float = MISSING


@dataclass
class AugmentConfig:
    policy: List[str] = MISSING
    translation: float = MISSING
    cutout: float = MISSING
    p: float = MISSING
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
    depth: int = MISSING


@dataclass
class SampleConfig:
    ckpt: Optional[str] = MISSING
    label: Any = MISSING
    n: Optional[int] = MISSING
    seed: int = MISSING
    out: Optional[str] = MISSING
    device: str = MISSING
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
class EvalCommandConfig(RunGeneratorConfig):
    n: int = MISSING
    seed: int = MISSING
    device: str = MISSING
    eval: EvalConfig = MISSING


@dataclass
class ExportConfig(RunGeneratorConfig):
    format: str = MISSING
    out: Optional[str] = MISSING


@dataclass
class FitClassifierConfig:
    dataset: Any = MISSING
    epochs: int = MISSING
    batch_size: int = MISSING
    seed: int = MISSING
    device: str = MISSING
    refit: bool = MISSING


NOT_CHOICES = ("model_loss",)  # loaded by the choices of model and loss, never chosen by hand


def options(group: str) -> list[str]:
    """The options of a config group of the shipped conf/: its YAML files' names."""
    folder = importlib.resources.files("ganctl.conf") / group
    return sorted(f.name[:-len(".yaml")] for f in folder.iterdir() if f.name.endswith(".yaml")) if folder.is_dir() else []


def config_groups() -> str:
    """`group: option, ...` for every folder of the shipped conf/ that a user chooses from, for
    `ganctl train --help` (Hydra's own listing would also show the schema/ groups)."""
    conf = importlib.resources.files("ganctl.conf")
    groups = sorted(d.name for d in conf.iterdir() if d.is_dir() and d.name not in NOT_CHOICES)
    return "\n".join(f"{group}: {', '.join(options(group))}" for group in groups if options(group))


def _run_time():
    from ganctl.training.distributed import run_time  # imports torch: only when a run directory is resolved
    return run_time()


_registered = False


def register() -> None:
    """Put the schemas into Hydra's ConfigStore under schema/<group>/<name>, once per process
    (storing them converts every dataclass: ~20 ms)."""
    global _registered
    if _registered:
        return
    _registered = True
    OmegaConf.register_new_resolver("ganctl_groups", config_groups, replace=True)
    # ${ganctl_now:%H-%M-%S}: Hydra's ${now:} with rank 0's clock under torchrun, so that every
    # rank resolves the same run directory.
    OmegaConf.register_new_resolver("ganctl_now", lambda pattern: _run_time().strftime(pattern),
                                    use_cache=True, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="sample_schema", node=SampleConfig)
    cs.store(name="summary_schema", node=SummaryConfig)
    cs.store(name="eval_schema", node=EvalCommandConfig)
    cs.store(name="fit_classifier_schema", node=FitClassifierConfig)
    cs.store(name="export_schema", node=ExportConfig)
    for group, name, node in [
        ("model", "mlp", MLPModelConfig),
        ("model", "dcgan", DCGANModelConfig),
        ("model", "resnet", ResNetModelConfig),
        ("loss", "base", LossConfig),
        ("loss", "bce", BCELossConfig),
        ("loss", "wgan", WGANLossConfig),
        ("loss", "wgan_gp", WGANGPLossConfig),
        ("dataset", "torchvision", TorchvisionDatasetConfig),
        ("dataset", "folder", FolderDatasetConfig),
        ("optimizer", "adam", AdamConfig),
        ("optimizer", "adamw", AdamWConfig),
        ("optimizer", "rmsprop", RMSpropConfig),
    ]:
        cs.store(group=f"schema/{group}", name=name, node=node)
