"""The Hydra apps behind `ganctl <command>`: each composes its config from conf/ and calls the
plain function that does the work. main.py routes the command line here."""
import logging
import math
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import ganctl
from ganctl.cli import registry
from ganctl.errors import Interrupted, UserError, fail, one_line

log = logging.getLogger("ganctl")
registry.register()

# Sweep jobs of this process that failed (the summary callback also counts those of other
# processes from their result.json): `ganctl train -m` then exits non-zero.
failed_jobs: list[str] = []


def user_error(e: BaseException) -> UserError | None:
    """The user's mistake behind `e`, if it is one: a UserError (also one that something wrapped),
    or an OSError about a file (disk full, read-only, a folder where a file should be)."""
    cause = e
    while cause is not None:
        if isinstance(cause, UserError):
            return cause
        if isinstance(cause, OSError) and (cause.filename or cause.errno):
            return UserError(one_line(cause))
        cause = cause.__cause__
    return None


def report(e: Exception):
    """A user's mistake as one line on stderr and a non-zero exit; anything else is raised."""
    error = user_error(e)
    if error is None:
        raise e
    fail(str(error), getattr(error, "exit_code", 2))


def report_user_errors(fn, cfg):
    """fn(cfg); a user's mistake is one line (cli checked the config's keys and ranges before)."""
    try:
        return fn(cfg)
    except Exception as e:
        report(e)


def save_hydra_files(cfg: DictConfig, run_dir: Path) -> None:
    """.hydra/config.yaml, hydra.yaml and overrides.yaml, as Hydra writes them, but only after the
    run directory is locked and known to hold no run (conf/train.yaml sets hydra.output_subdir
    to null so that Hydra itself never writes into an existing run)."""
    hydra_cfg = HydraConfig.get()
    folder = run_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, folder / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), folder / "hydra.yaml")
    OmegaConf.save(hydra_cfg.overrides.task, folder / "overrides.yaml")


# The folders of ./outputs before this command (cli sets it): a failed start removes only the
# empty folders it made there (outputs/<day>/), never one that was there before.
outputs_before: set[Path] = set()

# The process's first training job counts its start-up from the first import of ganctl; a later
# job of a sweep that runs in the same process, from when Hydra hands it over.
_process_start = [ganctl.STARTED]


@hydra.main(version_base="1.3", config_path="pkg://ganctl.conf", config_name="train")
def train_app(cfg: DictConfig) -> float | None:
    started = _process_start.pop() if _process_start else time.perf_counter()
    from ganctl.training import distributed
    from ganctl.run import directory
    from ganctl.training.loop import train
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    sweep_job = hydra_cfg.mode == RunMode.MULTIRUN
    ranks = distributed.init()
    if not ranks.is_main:
        log.setLevel(logging.WARNING)  # rank 0 tells the story
    ended_well, ours = False, False

    def on_start():  # the directory is locked and holds no other run: ours to write
        nonlocal ours
        ours = True
        if ranks.is_main and not cfg.resume:
            save_hydra_files(cfg, run_dir)
        log.info("run directory: %s", run_dir)

    try:
        result = train(cfg, run_dir, started, on_start)
        ended_well = True
    except Exception as e:
        if not sweep_job or isinstance(e, Interrupted):  # Ctrl-C stops the whole sweep
            if ours and ranks.is_main and not cfg.resume:
                directory.discard_failed_start(run_dir, Path("outputs"), outputs_before)
            report(e)
        # One failed job of a sweep is recorded and the sweep goes on (summary.md lists it).
        error = user_error(e)
        message = str(error) if error is not None else f"{type(e).__name__}: {one_line(e)}"
        if error is None:
            log.exception("sweep job %s failed", run_dir.name)
        log.error("ganctl: error: %s", message)
        failed_jobs.append(run_dir.name)
        if ours and ranks.is_main:
            directory.write_result(run_dir, {"status": "failed", "error": message})
        return math.nan  # Optuna counts a NaN trial as failed
    finally:
        distributed.shutdown(together=ended_well)
    # What a sweeper optimises: the config's optimized_metric, from the run's result; None where
    # the run has none (eval off, or a run that had nothing left to do). Only a sweep reads it.
    if sweep_job and result and cfg.optimized_metric not in result and result.get("step"):
        log.warning("optimized_metric=%s is not in this run's result (%s)", cfg.optimized_metric,
                    ", ".join(k for k in result if not k.startswith("Time/")))
    return result.get(cfg.optimized_metric) if result else None


@hydra.main(version_base="1.3", config_path="pkg://ganctl.conf", config_name="sample")
def sample_app(cfg: DictConfig) -> None:
    from ganctl.commands.sample import sample
    report_user_errors(sample, cfg)


@hydra.main(version_base="1.3", config_path="pkg://ganctl.conf", config_name="eval")
def eval_app(cfg: DictConfig) -> None:
    from ganctl.commands.evaluate import run_eval
    report_user_errors(run_eval, cfg)


@hydra.main(version_base="1.3", config_path="pkg://ganctl.conf", config_name="fit_classifier")
def fit_classifier_app(cfg: DictConfig) -> None:
    from ganctl.commands.evaluate import run_fit_classifier
    report_user_errors(run_fit_classifier, cfg)


@hydra.main(version_base="1.3", config_path="pkg://ganctl.conf", config_name="summary")
def summary_app(cfg: DictConfig) -> None:
    from ganctl.commands.summary import run_summary
    report_user_errors(run_summary, cfg)


@hydra.main(version_base="1.3", config_path="pkg://ganctl.conf", config_name="export")
def export_app(cfg: DictConfig) -> None:
    from ganctl.commands.export import run_export
    report_user_errors(run_export, cfg)


COMMANDS = {"train": train_app, "sample": sample_app, "eval": eval_app, "summary": summary_app,
            "fit-classifier": fit_classifier_app, "export": export_app}
