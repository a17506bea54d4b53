"""Sweeps on Hydra's launchers and Optuna's sweeper, and the summary table every sweep ends with."""
import csv
import json

import pytest
import yaml

from conftest import SHRINK, TINY_MODEL, run_ganctl
from ganctl.cli.sweep import write_summary

MLP = ["model=gan", *TINY_MODEL["gan"]]


def sweep_dirs(cwd):
    return sorted((cwd / "outputs" / "multirun").glob("*/*"))


def summary(sweep_dir) -> list[dict]:
    with open(sweep_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


def fake_job(sweep_dir, name: str, overrides: list[str], result: dict | None):
    job = sweep_dir / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if result is not None:
        (job / "result.json").write_text(json.dumps(result))


def test_summary_puts_the_lowest_fid_first_and_failures_last(tmp_path):
    common = ["model=gan", "trainer.max_steps=10", "hydra.launcher.n_jobs=2"]
    fake_job(tmp_path, "0_a", [*common, "loss=bce"], {"Eval/fid": 30.5, "Loss/D": 1.0, "step": 10})
    fake_job(tmp_path, "1_b", [*common, "loss=lsgan"], None)  # crashed: no result.json
    fake_job(tmp_path, "2_c", [*common, "loss=hinge"], {"Eval/fid": 12.25, "Loss/D": 2.0, "step": 10})
    fake_job(tmp_path, "3_d", [*common, "loss=wgan"], {"Loss/D": 0.5, "step": 10})  # eval was off
    rows = summary(tmp_path) if write_summary(tmp_path, "Eval/fid") else []
    assert [(r["job"], r["overrides"], r["status"], r["Eval/fid"]) for r in rows] == [
        ("2_c", "loss=hinge", "done", "12.25"), ("0_a", "loss=bce", "done", "30.5"),
        ("3_d", "loss=wgan", "done", ""), ("1_b", "loss=lsgan", "failed", "")]
    md = (tmp_path / "summary.md").read_text().splitlines()
    assert md[0] == "| job | overrides | status | Eval/fid | Loss/D | step |"
    assert md[2] == "| 2_c | loss=hinge | done | 12.25 | 2 | 10 |" and len(md) == 6


def test_summary_ranks_by_the_optimized_metric_highest_first_where_more_is_better(tmp_path):
    fake_job(tmp_path, "0_a", ["loss=bce"], {"Eval/fid": 9.0, "Eval/label_acc": 0.75, "step": 10})
    fake_job(tmp_path, "1_b", ["loss=lsgan"], {"Eval/fid": 30.0, "Eval/label_acc": 0.9, "step": 10})
    fake_job(tmp_path, "2_c", ["loss=hinge"], {"Eval/fid": 20.0, "Loss/G": 1.0, "step": 10})
    assert [r["job"] for r in write_summary(tmp_path, "Eval/label_acc")] == ["1_b", "0_a", "2_c"]
    assert (tmp_path / "summary.md").read_text().startswith("| job | overrides | status | Eval/label_acc | Eval/fid |")
    assert [r["job"] for r in write_summary(tmp_path, "Loss/G")] == ["2_c", "0_a", "1_b"]


@pytest.mark.processes
def test_joblib_runs_jobs_in_parallel_with_dataloader_workers(image_folder, tmp_path):
    """Folder data has DataLoader workers: inside a joblib (loky) job they must still start."""
    result = run_ganctl("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "loss=bce,hinge",
                        *SHRINK, "model=dcgan", *TINY_MODEL["dcgan"], "dataset=folder",
                        f"dataset.root={image_folder}", "dataset.img_size=32", "dataset.num_workers=2",
                        "trainer.batch_size=8", cwd=tmp_path, process=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = sweep_dirs(tmp_path)
    rows = summary(sweep)
    assert sorted((r["overrides"], r["status"], r["step"]) for r in rows) == [
        ("loss=bce", "done", "2"), ("loss=hinge", "done", "2")]
    assert all((sweep / r["job"] / "checkpoints" / "last.pt").is_file() for r in rows)


@pytest.mark.processes
def test_submitit_local_runs_each_job_in_its_own_process(data_root, tmp_path):
    result = run_ganctl("train", "-m", "hydra/launcher=submitit_local", "trainer.seed=1,2", *SHRINK, *MLP,
                        f"dataset.root={data_root}", "dataset.download=false", cwd=tmp_path, process=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = sweep_dirs(tmp_path)
    rows = summary(sweep)
    assert sorted((r["overrides"], r["status"]) for r in rows) == [
        ("trainer.seed=1", "done"), ("trainer.seed=2", "done")]
    assert (sweep / ".submitit").is_dir()  # submitit's own job logs


@pytest.mark.processes
def test_optuna_search_minimises_the_returned_fid(data_root, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"  # the database storage that SQLAlchemy 2 breaks
    result = run_ganctl("train", "-m", "search=optuna", "hydra.sweeper.n_trials=3", f"hydra.sweeper.storage={storage}",
                        *SHRINK, *MLP, "trainer.eval_every=2", "trainer.eval_n=100",
                        f"dataset.root={data_root}", "dataset.download=false", cwd=tmp_path, timeout=600, process=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = sweep_dirs(tmp_path)
    rows = summary(sweep)
    assert len(rows) == 3 and all(r["status"] == "done" for r in rows)
    fids = [float(r["Eval/fid"]) for r in rows]
    assert fids == sorted(fids)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert abs(best["best_value"] - fids[0]) <= 1e-3 * fids[0]
    for r in rows:  # each trial drew its own learning rates and loss from the search space
        assert {o.split("=")[0] for o in r["overrides"].split()} >= {"optimizer.lr_g", "optimizer.lr_d", "loss"}
        assert 5e-5 <= float(r["overrides"].split("optimizer.lr_g=")[1].split()[0]) <= 1e-3


def test_slurm_launcher_config_names_partition_gpus_and_time(tmp_path):
    result = run_ganctl("train", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                        "hydra.launcher.timeout_min=30", "--cfg", "hydra", "--package", "hydra.launcher", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    launcher = yaml.safe_load(result.stdout)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["partition"], launcher["gpus_per_node"], launcher["timeout_min"]) == ("gpu", 1, 30)
