"""Hydra's side of the config: the schemas stored in its ConfigStore (so that conf/ can name
them), the resolvers conf/ uses, and the list of the groups a user chooses from."""
import importlib.resources

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from ganctl.config.schema import (AdamConfig, AdamWConfig, BCELossConfig, DCGANModelConfig, EvalCommandConfig,
                                  ExportConfig, FitClassifierConfig, FolderDatasetConfig, LossConfig,
                                  MLPModelConfig, ResNetModelConfig, RMSpropConfig, SampleConfig,
                                  SummaryConfig, TorchvisionDatasetConfig, TrainConfig, WGANGPLossConfig,
                                  WGANLossConfig)

NOT_CHOICES = ("model_loss", "model_dataset")  # loaded by the choices of two other groups, never chosen by hand


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
