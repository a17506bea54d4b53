"""The table at the end of a sweep: `summary.csv` and `summary.md` in the sweep directory, one row
per job (its overrides and final metrics), best first.

A Hydra callback (hydra.callbacks.summary in conf/train.yaml) that runs in the process that
launched the sweep, after every job has finished. It reads what each job left on disk
(`.hydra/overrides.yaml` and `result.json`), so it works the same for every launcher (basic,
joblib, submitit) and sweeper (basic, optuna), wherever the jobs ran. A job that failed with an
error wrote {"status": "failed", "error": ...} as its result.json; one that left none crashed.
"""
import csv
import json
import logging
import math
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ganctl.run.directory import RESULT_FILE

log = logging.getLogger(__name__)

# Metrics where more is better; summary.md ranks by the config's optimized_metric, lowest first
# unless it is one of these (an Optuna search says its direction in hydra.sweeper.direction).
HIGHER_IS_BETTER = {f"Eval/{k}" for k in ("label_acc", "precision", "recall", "density", "coverage", "is")}
COLUMNS = ["Eval/fid", "Eval/fid_ratio", "Eval/label_acc", "Eval/precision", "Eval/recall",
           "Loss/D", "Loss/G", "step", "error"]

failed_jobs: list[str] = []  # the failed jobs of the last summary written in this process


def job_rows(sweep_dir: Path) -> list[dict]:
    """One row per job directory under `sweep_dir`: {"job", "overrides", "status", metrics...}."""
    rows = []
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml")):
        job_dir = overrides_file.parent.parent
        # Read as data: iterating OmegaConf's list would resolve a `${...}` in the file.
        overrides = [o for o in yaml.safe_load(overrides_file.read_text()) or [] if not str(o).startswith("hydra.")]
        result_file = job_dir / RESULT_FILE
        try:
            result = json.loads(result_file.read_text()) if result_file.is_file() else {}
        except (OSError, ValueError):
            result = {}
        status = result.pop("status", "done") if result else "failed"
        rows.append({"job": job_dir.name, "overrides": " ".join(overrides), **result, "status": status})
    return rows


def varying_only(rows: list[dict]) -> list[dict]:
    """Keep in each row's `overrides` only what differs between jobs (the swept values): the
    overrides every job shares say nothing in a comparison. One job keeps them all."""
    if len(rows) < 2:
        return rows
    shared = set.intersection(*(set(r["overrides"].split()) for r in rows))
    return [{**r, "overrides": " ".join(o for o in r["overrides"].split() if o not in shared)}
            for r in rows]


def best_first(rows: list[dict], metric: str) -> list[dict]:
    """Finished jobs by `metric` (best first: the highest for a metric in HIGHER_IS_BETTER, else the
    lowest), then those without it, then failures."""
    sign = -1 if metric in HIGHER_IS_BETTER else 1

    def key(row):
        value = row.get(metric)
        finite = isinstance(value, (int, float)) and math.isfinite(value)
        return (row["status"] != "done", not finite, sign * value if finite else 0.0, row["job"])
    return sorted(rows, key=key)


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value).replace("|", "\\|")


def write_summary(sweep_dir: Path, metric: str) -> list[dict]:
    """Write summary.csv and summary.md into `sweep_dir`; return the rows, best by `metric` first."""
    rows = best_first(varying_only(job_rows(sweep_dir)), metric)
    present = [c for c in dict.fromkeys([metric, *COLUMNS]) if any(c in r for r in rows)]
    header = ["job", "overrides", "status", *present]
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in header) + " |" for r in rows]
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    failed_jobs[:] = [r["job"] for r in rows if r["status"] != "done"]
    return rows


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        metric = config.optimized_metric
        rows = write_summary(sweep_dir, metric)
        if rows:
            best = rows[0]
            log.info("sweep summary: %s (best first: %s%s)", sweep_dir / "summary.md", best["job"],
                     f", {metric} {best[metric]:.4g}" if metric in best else "")
