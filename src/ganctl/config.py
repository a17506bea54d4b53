"""Typed schemas for the config tree in conf/.

Each option of a config group starts its defaults list with its schema, e.g. conf/loss/wgan_gp.yaml
has `defaults: [/schema/loss/wgan_gp@_here_]`, so a misspelt key or a wrong type fails while Hydra
composes the config, before any work starts. Only entry points (cli, train, sample) import this.
"""
import importlib.resources
import re
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
@dataclass
class MLPGeneratorConfig:
    _target_: str = "ganctl.nets.mlp.Generator"
    z_dim: int = "${..z_dim}"  # type: ignore[assignment]  (interpolation, typed on resolve)
    hidden: List[int] = field(default_factory=lambda: [256, 512, 1024])
    norm: str = "batch"
    embed_dim: int = 10


@dataclass
class MLPDiscriminatorConfig:
    _target_: str = "ganctl.nets.mlp.Discriminator"
    hidden: List[int] = field(default_factory=lambda: [1024, 512, 256])
    dropout: float = 0.3
    embed_dim: int = 10
    norm: str = "auto"
    projection: bool = False
    spectral_norm: bool = False


@dataclass
class DCGANGeneratorConfig:
    _target_: str = "ganctl.nets.dcgan.Generator"
    z_dim: int = "${..z_dim}"  # type: ignore[assignment]
    ngf: int = 64
    embed_dim: int = 32
    cbn: bool = False
    codes: int = 0


@dataclass
class DCGANDiscriminatorConfig:
    _target_: str = "ganctl.nets.dcgan.Discriminator"
    ndf: int = 64
    norm: str = "auto"
    mbstd: bool = False
    spectral_norm: bool = False
    pack: int = 1


@dataclass
class ModelConfig:
    name: str = MISSING
    conditional: bool = False
    z_dim: int = 100
    init: str = "dcgan"  # dcgan: N(0, 0.02) weights | default: PyTorch's own init
    aux_weight: float = 0.0  # D's second head: AC-GAN's classifier, or InfoGAN's (G.codes); 0 = off
    lr: float = 1e-3  # the Adam/AdamW rate (G and D) this model trains best at; optimizer.lr_g/lr_d win
    betas: List[float] = field(default_factory=lambda: [0.5, 0.999])  # its Adam/AdamW betas; optimizer.betas wins
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


# --- loss ------------------------------------------------------------------------------------
@dataclass
class LossConfig:
    _target_: str = MISSING
    n_critic: int = 1


@dataclass
class BCELossConfig(LossConfig):
    saturating: bool = False


@dataclass
class WGANLossConfig(LossConfig):
    clip: float = 0.01


@dataclass
class WGANGPLossConfig(LossConfig):
    gp_weight: float = 10.0


# --- dataset ---------------------------------------------------------------------------------
@dataclass
class DatasetConfig:
    _target_: str = MISSING
    root: str = MISSING


@dataclass
class TorchvisionDatasetConfig(DatasetConfig):
    download: bool = True
    split: Split = Split.train


@dataclass
class FolderDatasetConfig(DatasetConfig):
    img_size: int = 64
    channels: int = 3
    num_workers: int = 2


# --- optimizer -------------------------------------------------------------------------------
@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    G: Any = MISSING
    D: Any = MISSING


@dataclass
class AdamConfig(OptimizerConfig):
    betas: List[float] = field(default_factory=lambda: [0.5, 0.999])
    fused: Optional[bool] = None


@dataclass
class AdamWConfig(AdamConfig):
    weight_decay: float = 0.01


@dataclass
class RMSpropConfig(OptimizerConfig):
    alpha: float = 0.99


# --- trainer ---------------------------------------------------------------------------------
@dataclass
class TrainerConfig:
    epochs: int = 5
    max_steps: Optional[int] = None
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    precision: Precision = Precision.fp32
    noise: Noise = Noise.normal
    label_smoothing: float = 0.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    ema_bn_batches: int = 8
    log_every: int = 50
    sample_every: int = 200
    ckpt_every: int = 1000
    keep_ckpts: int = 3
    progress: bool = True
    deterministic: bool = False
    eval_every: Optional[int] = 500
    eval_n: int = 2000
    sync_bn: bool = False
    channels_last: bool = False
    compile: str = "none"


class Backbone(str, Enum):
    classifier = "classifier"
    inception = "inception"


@dataclass
class EvalConfig:
    backbone: Backbone = Backbone.classifier
    inception_weights: Optional[str] = None


@dataclass
class TrainConfig:
    resume: Optional[str] = None
    model: Any = MISSING
    loss: Any = MISSING
    dataset: Any = MISSING
    optimizer: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class SampleConfig:
    ckpt: Optional[str] = None
    label: Any = None
    n: Optional[int] = None
    seed: int = 0
    out: Optional[str] = None
    device: str = "auto"
    outputs: str = "outputs"
    interpolate: Any = None
    steps: int = 10
    spherical: bool = False


@dataclass
class EvalCommandConfig:
    ckpt: Optional[str] = None
    which: str = "best"
    generator: str = "ema"
    n: int = 10_000
    seed: int = 0
    device: str = "auto"
    outputs: str = "outputs"
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class FitClassifierConfig:
    dataset: Any = MISSING
    epochs: int = 3
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    refit: bool = False


def _adam_betas_ok(betas) -> bool:
    return len(betas) == 2 and all(0 <= b < 1 for b in betas)


# key, what it must be, the test. Types are the schemas' job; these are the ranges.
# trainer.compile: none, or a torch.compile mode (reduce-overhead captures CUDA graphs).
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")

def _seed_ok(v) -> bool:
    return 0 <= v < 2**32  # what NumPy's seed takes; torch takes more


def _widths_ok(v) -> bool:
    return all(w >= 1 for w in v)


def _device_ok(v) -> bool:
    return bool(re.fullmatch(r"auto|cpu|mps|(cuda|xpu)(:\d+)?", v))


RANGES = [
    ("seed", "in [0, 2**32)", _seed_ok),  # ganctl sample / eval / fit-classifier
    ("device", "auto, cpu, cuda, cuda:<index> or mps", _device_ok),
    ("trainer.device", "auto, cpu, cuda, cuda:<index> or mps", _device_ok),
    ("trainer.seed", "in [0, 2**32)", _seed_ok),
    ("trainer.batch_size", ">= 1", lambda v: v >= 1),
    ("trainer.epochs", ">= 1", lambda v: v >= 1),
    ("trainer.max_steps", "null or >= 1", lambda v: v is None or v >= 1),
    ("trainer.log_every", ">= 1", lambda v: v >= 1),
    ("trainer.sample_every", ">= 1", lambda v: v >= 1),
    ("trainer.ckpt_every", ">= 1", lambda v: v >= 1),
    ("trainer.keep_ckpts", ">= 0", lambda v: v >= 0),
    ("trainer.label_smoothing", "in [0, 1)", lambda v: 0 <= v < 1),
    ("trainer.ema_decay", "in [0, 1)", lambda v: 0 <= v < 1),
    ("trainer.ema_bn_batches", ">= 0", lambda v: v >= 0),
    ("trainer.eval_every", "null or >= 1", lambda v: v is None or v >= 1),
    ("trainer.eval_n", ">= 100", lambda v: v >= 100),
    ("optimizer.lr_g", "> 0", lambda v: v > 0),
    ("optimizer.lr_d", "> 0", lambda v: v > 0),
    ("optimizer.weight_decay", ">= 0", lambda v: v >= 0),
    ("loss.n_critic", ">= 1", lambda v: v >= 1),
    ("loss.gp_weight", ">= 0", lambda v: v >= 0),
    ("loss.clip", "> 0", lambda v: v > 0),
    ("model.z_dim", ">= 1", lambda v: v >= 1),
    ("model.aux_weight", ">= 0", lambda v: v >= 0),
    ("model.lr", "> 0", lambda v: v > 0),
    ("model.betas", "two values in [0, 1)", _adam_betas_ok),
    ("optimizer.betas", "two values in [0, 1)", _adam_betas_ok),
    ("model.D.pack", ">= 1", lambda v: v >= 1),
    ("model.G.ngf", ">= 1", lambda v: v >= 1),
    ("model.D.ndf", ">= 1", lambda v: v >= 1),
    ("model.G.embed_dim", ">= 1", lambda v: v >= 1),
    ("model.D.embed_dim", ">= 1", lambda v: v >= 1),
    ("model.G.hidden", "widths >= 1", _widths_ok),
    ("model.D.hidden", "widths >= 1", _widths_ok),
    ("model.D.dropout", "in [0, 1)", lambda v: 0 <= v < 1),
    ("dataset.channels", "1 (grey) or 3 (RGB)", lambda v: v in (1, 3)),
    ("dataset.img_size", ">= 8", lambda v: v >= 8),
    ("dataset.num_workers", ">= 0", lambda v: v >= 0),
    ("model.G.codes", "0 or >= 2", lambda v: v == 0 or v >= 2),
    ("trainer.compile", "one of " + ", ".join(COMPILE_MODES), lambda v: v in COMPILE_MODES),
]


def range_errors(cfg) -> list[str]:
    """`key=value: must be ...` for every value out of its allowed range."""
    errors = []
    for key, allowed, ok in RANGES:
        node, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, node) if node else cfg
        if parent is not None and leaf in parent and not ok(parent[leaf]):
            errors.append(f"{key}={parent[leaf]}: must be {allowed}")
    return errors


NOT_CHOICES = ("model_loss",)  # loaded by the choices of model and loss, never chosen by hand


def config_groups() -> str:
    """`group: option, ...` for every folder of the shipped conf/ that a user chooses from, for
    `ganctl train --help` (Hydra's own listing would also show the schema/ groups)."""
    conf = importlib.resources.files("ganctl.conf")
    lines = []
    for group in sorted((d for d in conf.iterdir() if d.is_dir() and d.name not in NOT_CHOICES),
                        key=lambda d: d.name):
        names = sorted(f.name[:-len(".yaml")] for f in group.iterdir() if f.name.endswith(".yaml"))
        if names:
            lines.append(f"{group.name}: {', '.join(names)}")
    return "\n".join(lines)


def _run_time():
    from ganctl.distributed import run_time  # imports torch: only when a run directory is resolved
    return run_time()


def register() -> None:
    """Put the schemas into Hydra's ConfigStore under schema/<group>/<name>."""
    OmegaConf.register_new_resolver("ganctl_groups", config_groups, replace=True)
    # ${ganctl_now:%H-%M-%S}: Hydra's ${now:} with rank 0's clock under torchrun, so that every
    # rank resolves the same run directory.
    OmegaConf.register_new_resolver("ganctl_now", lambda pattern: _run_time().strftime(pattern),
                                    use_cache=True, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="sample_schema", node=SampleConfig)
    cs.store(name="eval_schema", node=EvalCommandConfig)
    cs.store(name="fit_classifier_schema", node=FitClassifierConfig)
    for group, name, node in [
        ("model", "mlp", MLPModelConfig),
        ("model", "dcgan", DCGANModelConfig),
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
