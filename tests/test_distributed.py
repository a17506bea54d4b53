"""Data-parallel training with torchrun on two CPU processes (gloo): one run directory, one
checkpoint stream, resume, and the same training as one process at twice the batch."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from conftest import SHRINK, TINY_MODEL, run_ganctl
from ganctl.training import distributed

# No BatchNorm and no dropout: then a batch split over ranks gives exactly the gradient of the
# whole batch (BatchNorm would normalise each half by its own statistics).
PLAIN_MLP = ["model=gan", *TINY_MODEL["gan"], "model.G.norm=none", "model.D.dropout=0",
             "trainer.ckpt_every=2", "trainer.log_every=2"]


def torchrun(*args: str, cwd: Path, nproc: int = 2):
    # faulthandler: a worker that dies on a signal prints where it was.
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", "-m", "ganctl", "train", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def workers_said(result) -> str:
    """The end of what the workers printed, without torchrun's own traceback and summary of
    the failure, which fill the tail of stderr and push the worker's message out of sight."""
    text = result.stderr
    cut = text.rfind("Traceback (most recent call last):", 0, text.rfind("ChildFailedError"))
    return text[:cut][-3000:] if cut > 0 else text[-3000:]


def weights(run: Path) -> dict:
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    return {f"{net}.{k}": v for net in ("G", "D", "G_ema") for k, v in state[net].items()}


@pytest.mark.processes
def test_two_ranks_share_a_run_resume_and_equal_one_process_at_twice_the_batch(data_root, tmp_path):
    common = [*SHRINK, *PLAIN_MLP, f"dataset.root={data_root}", "dataset.download=false"]
    # With the quick eval on: rank 0 evaluates alone while the others wait.
    first = torchrun(*common, "trainer.batch_size=8", "trainer.max_steps=2", "trainer.eval_every=2",
                     "trainer.eval_n=100", cwd=tmp_path)
    assert first.returncode == 0, workers_said(first)
    runs = list((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 1, runs  # both ranks resolved the same time-stamped directory
    run = runs[0]
    resumed = torchrun(f"resume={run}", "trainer.max_steps=4", cwd=tmp_path)
    assert resumed.returncode == 0, workers_said(resumed)
    assert list((tmp_path / "outputs").glob("*/*")) == [run]

    assert sorted(p.name for p in (run / "checkpoints").glob("*.pt")) == ["best.pt", "last.pt", "step_2.pt", "step_4.pt"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_2.png", "step_4.png"]
    assert len(list((run / "tb").iterdir())) == 2  # first run and resume, rank 0 alone
    log = (run / "train.log").read_text()
    assert log.count("G and D identical on all 2 ranks") == 2  # steps 2 and 4, checked before saving
    assert log.count("data parallel: 2 processes (gloo), batch 8 each") == 2  # first run and resume
    assert "resumed" in log and "run directory" in log
    steps = [line.split(",")[0] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == ['{"step": 2', '{"step": 4']  # one line per log step, from rank 0 alone
    evals = [line.split(",")[0] for line in (run / "eval.jsonl").read_text().splitlines()]
    assert evals == ['{"step": 2', '{"step": 4'] and (run / "checkpoints" / "best.pt").is_file()

    single = run_ganctl("train", *common, "trainer.batch_size=16", "trainer.max_steps=4",
                        f"hydra.run.dir={tmp_path / 'single'}", cwd=tmp_path, process=True)
    assert single.returncode == 0, single.stderr[-3000:]
    a, b = weights(run), weights(tmp_path / "single")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert not all(torch.equal(a[k], weights_at_step(run, 2)[k]) for k in a)  # it did train on


def weights_at_step(run: Path, step: int) -> dict:
    state = torch.load(run / "checkpoints" / f"step_{step}.pt", weights_only=True)
    return {f"{net}.{k}": v for net in ("G", "D", "G_ema") for k, v in state[net].items()}


def test_torchrun_with_a_sweep_is_refused_in_one_line(tmp_path):
    result = run_ganctl("train", "-m", "loss=bce,lsgan", cwd=tmp_path,
                        env={"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "cannot run a sweep (-m)" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


def _differ_worker(rank: int, init_file: str, perturb: bool, out: str):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    if perturb and rank == 1:
        with torch.no_grad():
            net.weight[0, 0] += 1e-6
    Path(f"{out}.{rank}").write_text(str(distributed.replicas_differ(net)))
    torch.distributed.destroy_process_group()


@pytest.mark.processes
@pytest.mark.parametrize("perturb", [False, True])
def test_replica_check_finds_one_differing_weight(tmp_path, perturb):
    mp.spawn(_differ_worker, args=(str(tmp_path / "init"), perturb, str(tmp_path / "out")), nprocs=2)
    found = {(tmp_path / f"out.{r}").read_text() for r in range(2)}
    assert found == {"1" if perturb else "0"}  # every rank learns the same count


@pytest.mark.processes
def test_sync_bn_on_cpu_ranks_is_refused_in_one_line(data_root, tmp_path):
    result = torchrun(*SHRINK, "model=dcgan", *TINY_MODEL["dcgan"], "trainer.sync_bn=true",
                      f"dataset.root={data_root}", "dataset.download=false", cwd=tmp_path)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("ganctl: error:")]
    assert ours and set(ours) == {"ganctl: error: trainer.sync_bn=true needs CUDA devices "
                                  "(SyncBatchNorm has no CPU kernel)"}
    assert not list((tmp_path / "outputs").glob("*/*/checkpoints"))


def _ada_worker(rank: int, init_file: str, out: str):
    from ganctl.training.augment import AdaptiveP
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    ada = AdaptiveP(target=0.6, interval=2, kimg=1.0, batch_size=50, device="cpu", world_size=2)  # a move of 0.2
    for _ in range(2):  # rank 0's D says real (r_t 1.0, alone: p up), rank 1's mostly not (0.4, alone: p stays 0)
        ada.observe(torch.tensor(1.0 if rank == 0 else 0.4))
    Path(f"{out}.{rank}").write_text(f"{ada.p.item():.6f} {ada.rt.item():.6f}")
    torch.distributed.destroy_process_group()


@pytest.mark.processes
def test_ada_moves_p_the_same_on_every_rank_from_the_mean_signal(tmp_path):
    # D's weights stay equal under DDP whatever p is, so the replica check cannot see a p that
    # drifted apart: p must follow the all-rank mean of r_t (here 0.7 > target 0.6, so up).
    mp.spawn(_ada_worker, args=(str(tmp_path / "init"), str(tmp_path / "out")), nprocs=2)
    found = {(tmp_path / f"out.{r}").read_text() for r in range(2)}
    assert found == {"0.200000 0.700000"}
