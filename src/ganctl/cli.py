"""`ganctl <command> [hydra args]`: one console script whose subcommands are Hydra apps, so
overrides, -m, --cfg, --help, hydra.run.dir=... and shell completion all keep working.

    ganctl train model=cdcgan loss=wgan_gp
    ganctl train -m optimizer.lr_g=1e-4,2e-4 loss=bce,lsgan
    ganctl sample label=5 n=64 out=fives.png
"""
import logging
import os
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import ganctl
from ganctl import config
from ganctl.errors import UserError

USAGE = """usage: ganctl <command> [overrides] [hydra options]

commands:
  train    train a GAN (ganctl train --help lists the config groups)
  sample   draw images from a trained generator (ganctl sample --help)
  eval     FID, KID, IS, precision/recall, label accuracy of a trained generator
  fit-classifier  train and cache the feature classifier that eval uses

examples:
  ganctl train model=cdcgan loss=wgan_gp
  ganctl train -m optimizer.lr_g=1e-4,2e-4 loss=bce,lsgan
  ganctl sample label=5 n=64 out=fives.png
  ganctl eval ckpt=outputs/<day>/<run> n=10000
"""

log = logging.getLogger("ganctl")
config.register()


def _fail(message: str, code: int = 2):
    print(f"ganctl: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _report_user_errors(fn, *args):
    """Run fn; a UserError, also one that hydra.utils.instantiate wrapped, becomes one line."""
    try:
        return fn(*args)
    except Exception as e:
        cause = e
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__
        if cause is None:
            raise
        _fail(str(cause), getattr(cause, "exit_code", 2))


# The process's first training job counts its start-up from the first import of ganctl; a later
# job of a sweep that runs in the same process, from when Hydra hands it over.
_process_start = [ganctl.STARTED]


@hydra.main(version_base="1.3", config_path="pkg://ganctl.conf", config_name="train")
def train_app(cfg: DictConfig) -> None:
    started = _process_start.pop() if _process_start else time.perf_counter()
    from ganctl import distributed
    from ganctl.train import train
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if not distributed.init().is_main:
        log.setLevel(logging.WARNING)  # rank 0 tells the story
    log.info("run directory: %s", run_dir)
    ended_well = False
    try:
        result = _report_user_errors(train, cfg, run_dir, started)
        ended_well = True
    finally:
        distributed.shutdown(together=ended_well)
    # The final FID (classifier features) is what a Hydra sweeper minimises; None with eval off.
    return result.get("Eval/fid") if result else None


@hydra.main(version_base="1.3", config_path="pkg://ganctl.conf", config_name="sample")
def sample_app(cfg: DictConfig) -> None:
    from ganctl.sample import sample
    _report_user_errors(sample, cfg)


@hydra.main(version_base="1.3", config_path="pkg://ganctl.conf", config_name="eval")
def eval_app(cfg: DictConfig) -> None:
    from ganctl.evaluate import run_eval
    _report_user_errors(run_eval, cfg)


@hydra.main(version_base="1.3", config_path="pkg://ganctl.conf", config_name="fit_classifier")
def fit_classifier_app(cfg: DictConfig) -> None:
    from ganctl.evaluate import run_fit_classifier
    _report_user_errors(run_fit_classifier, cfg)


COMMANDS = {"train": train_app, "sample": sample_app, "eval": eval_app, "fit-classifier": fit_classifier_app}


def _hydra_argv(args: list[str]) -> list[str]:
    """Hydra 1.3 wants -m/--multirun before the overrides."""
    flags = [a for a in args if a in ("-m", "--multirun")]
    return flags + [a for a in args if a not in ("-m", "--multirun")]


def _refuse_existing_run_dir(args: list[str]) -> None:
    """Hydra writes .hydra/ into hydra.run.dir before the job starts: refuse a directory that
    already holds a run before Hydra can overwrite its saved config."""
    for a in args:
        if a.startswith("hydra.run.dir="):
            from ganctl.checkpoint import holds_run  # imports torch: only when a directory is named
            run_dir = Path(a.split("=", 1)[1])
            if holds_run(run_dir):
                _fail(f"{run_dir} already holds a run's checkpoints; choose a new hydra.run.dir "
                      f"(or continue it with resume={run_dir})")


def _one_line(e: BaseException) -> str:
    """Hydra's multi-line composition errors (and their causes) as one line."""
    parts = []
    while e is not None:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        lines = [line for line in lines if not line.startswith(("full_key:", "object_type=", "reference_type="))]
        if "Config search path:" in lines:  # Hydra's debugging aid, not the user's problem
            lines = lines[:lines.index("Config search path:")]
        text, text_is_list = "", False
        for line in lines:  # "Available options in 'model':" then one option a line
            text += (" " if not text or text.endswith((":", ".")) else ", " if text_is_list else ". ") + line
            text_is_list = line.endswith(":") or text_is_list
        if text.strip() and text.strip() not in parts:
            parts.append(text.strip())
        e = e.__cause__
    return ": ".join(parts)


def _check_train_config(args: list[str]) -> None:
    """Compose the config as Hydra will and check its ranges, before Hydra creates a run directory,
    so a bad value costs one line and leaves nothing behind. Multirun jobs are checked one by one."""
    if any(a.startswith("-") for a in args):  # --help, --cfg, -m ...: Hydra's own business
        return
    from hydra import compose, initialize_config_module
    overrides = [a for a in args if not a.startswith("hydra.")]
    try:
        with initialize_config_module("ganctl.conf", version_base="1.3"):
            cfg = compose("train", overrides=overrides)
    except Exception as e:
        _fail(_one_line(e))
    errors = config.range_errors(cfg)
    if errors:
        _fail("; ".join(errors))


def _resume_args(args: list[str]) -> list[str]:
    """`resume=<run dir>` or `resume=true` (newest run): rerun Hydra in that directory with the
    run's own overrides first, so the user repeats none of them; new ones (trainer.max_steps=...)
    come after and win. output_subdir=null keeps the run's original .hydra/ files untouched."""
    from ganctl.checkpoint import newest_run  # imports torch: only when resuming

    values = [a.split("=", 1)[1] for a in args if a.startswith("resume=")]
    if not values or values[-1].lower() in ("null", "none", "false"):
        return args
    if "-m" in args or "--multirun" in args:
        _fail("resume= continues one run and cannot be combined with -m")
    if any(a.startswith("hydra.run.dir=") for a in args):
        _fail("resume= already names the run directory; drop hydra.run.dir=")
    run_dir = newest_run(Path("outputs")) if values[-1].lower() == "true" else Path(values[-1])
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        _fail(f"resume={values[-1]}: no checkpoints/last.pt in {run_dir.resolve()}")
    saved = run_dir / ".hydra" / "overrides.yaml"
    original = [o for o in (OmegaConf.load(saved) if saved.is_file() else [])
                if not o.startswith(("hydra.", "resume="))]
    run_dir = run_dir.resolve()
    rest = [a for a in args if not a.startswith("resume=")]
    return [*original, *rest, f"resume={run_dir}", f"hydra.run.dir={run_dir}", "hydra.output_subdir=null"]


def _torchrun_args(args: list[str]) -> list[str]:
    """Under torchrun every rank runs this command: a sweep would run on every rank, so -m is
    refused; ranks other than 0 write no .hydra/ files and no log file into the shared run dir."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return args
    if "-m" in args or "--multirun" in args:
        _fail("torchrun runs one training on many processes and cannot run a sweep (-m): every "
              "rank would run all of its jobs; sweep with ganctl train -m and a launcher instead")
    if int(os.environ.get("RANK", "0")) == 0:
        return args
    return [*args, "hydra.output_subdir=null", "hydra/job_logging=stdout"]


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if "-sc" in args or "--shell-completion" in args:
        # Completion: the typed line is in COMP_LINE, e.g. "ganctl train model=".
        # Hydra would read the subcommand as an override, so it is routed and then removed.
        words = os.environ.get("COMP_LINE", "").split()
        command = words[1] if len(words) > 1 and words[1] in COMMANDS else "train"
        if len(words) > 1 and words[1] in COMMANDS:
            os.environ["COMP_LINE"] = " ".join([words[0]] + words[2:]) + (
                " " if os.environ["COMP_LINE"].endswith(" ") else "")
        if args and args[0] in COMMANDS:
            args = args[1:]
        sys.argv = [sys.argv[0]] + args
        COMMANDS[command]()
        return
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        _fail(f"unknown command {command!r}; choose from {', '.join(COMMANDS)} (ganctl --help)")
    if command == "train":
        _refuse_existing_run_dir(rest)
        try:
            rest = _resume_args(rest)
        except UserError as e:
            _fail(str(e))
        _check_train_config(rest)
        rest = _torchrun_args(rest)
    sys.argv = [f"{Path(sys.argv[0]).name} {command}"] + _hydra_argv(rest)
    COMMANDS[command]()


if __name__ == "__main__":
    main()
