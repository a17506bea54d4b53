"""Hostile files and real faults: a crafted checkpoint or overrides file never runs code, a run
directory has one writer, NaN weights never become a checkpoint, a full disk or a failed sweep job
loses nothing, and awkward paths resume."""
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import SHRINK, TINY_MODEL, one_line_error, run_ganctl
from ganctl.run import checkpoint
from ganctl.run import directory
from ganctl.run.checkpoint import load_checkpoint
from ganctl.errors import UserError
from ganctl.training.loop import train

TINY = [*SHRINK, *TINY_MODEL["dcgan"]]


def cli_args(data_root) -> list[str]:
    return [*TINY, f"dataset.root={data_root}", "dataset.download=false"]


def payloads(marker: Path) -> dict:
    """Config values that make hydra.utils.instantiate create `marker`, by several routes."""
    touch = {"_target_": "pathlib.Path.touch", "_args_": [str(marker)]}
    return {
        "nested _target_": touch,
        "builtins.exec": {"_target_": "builtins.exec", "_args_": [f"open({str(marker)!r}, 'w').close()"]},
        "torch.save": {"_target_": "torch.save", "obj": 1, "f": str(marker)},
        "os.system": {"_target_": "os.system", "_args_": [f"touch {shlex.quote(str(marker))}"]},
        "_partial_": {"_target_": "pathlib.Path.touch", "_partial_": False, "_args_": [str(marker)]},
    }


ROUTES = ["nested _target_", "builtins.exec", "torch.save", "os.system", "_partial_"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("command", ["sample", "eval"])
def test_a_crafted_checkpoint_never_runs_code(tiny_run, tmp_path, ganctl, route, command):
    marker = tmp_path / "pwned"
    state = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=True)
    state["cfg"]["model"]["G"]["ngf"] = payloads(marker)[route]  # instantiate builds nested nodes first
    crafted = tmp_path / "crafted.pt"
    torch.save(state, crafted)
    code, _, err = ganctl(command, f"ckpt={crafted}", "n=8", cwd=tmp_path)
    one_line_error(code, err, "model.G", "refusing to build")
    assert not marker.exists()


@pytest.mark.parametrize("node,target", [
    ("model.G", "pathlib.Path.touch"),            # any callable
    ("model.G", "ganctl.data.load_folder"),       # ganctl's own, but not a generator
    ("model.G", "ganctl.nets.dcgan.nn.Linear"),   # imported into a ganctl module, not defined there
    ("model.G", "ganctl.nets.dcgan.Discriminator"),
    ("dataset", "os.system"),
])
def test_a_checkpoint_builds_only_ganctl_classes_of_the_right_role(tiny_run, tmp_path, ganctl, node, target):
    state = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=True)
    group, _, key = node.partition(".")
    (state["cfg"][group][key] if key else state["cfg"][group])["_target_"] = target
    crafted = tmp_path / "crafted.pt"
    torch.save(state, crafted)
    command = "eval" if group == "dataset" else "sample"  # only eval builds the dataset
    code, _, err = ganctl(command, f"ckpt={crafted}", "n=8", cwd=tmp_path)
    one_line_error(code, err, f"_target_={target}", "not one of ganctl's own")


@pytest.mark.parametrize("override", [
    "model.G.ngf={_target_:pathlib.Path.touch,_args_:[MARKER]}",
    "+hydra.callbacks.evil={_target_:pathlib.Path.touch,_args_:[MARKER]}",
    "optimizer.G={_target_:os.system,_args_:['touch MARKER']}",
    "+model.G._args_=[MARKER]",
    "model@_global_.x=dcgan",
])
def test_a_crafted_overrides_file_is_refused_on_resume(tiny_run, tmp_path, ganctl, override):
    marker = tmp_path / "pwned"
    saved = tiny_run / ".hydra" / "overrides.yaml"
    saved.write_text(yaml.safe_dump([*yaml.safe_load(saved.read_text()), override.replace("MARKER", str(marker))]))
    before = (tiny_run / "checkpoints" / "last.pt").read_bytes()
    code, _, err = ganctl("train", f"resume={tiny_run}", "trainer.max_steps=4", cwd=tmp_path)
    one_line_error(code, err, "refusing to replay", "nothing was resumed")
    assert not marker.exists()
    assert (tiny_run / "checkpoints" / "last.pt").read_bytes() == before


HOLD_LOCK = ("import fcntl, sys, time\n"
             "f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); f.write('ganctl pid 4242'); f.flush()\n"
             "print('locked', flush=True); time.sleep(120)\n")


def test_a_run_directory_has_one_writer(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir / directory.LOCK_FILE)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=r"run is in use by ganctl pid 4242: one run directory has one writer"):
            train(make_cfg(), run_dir)
        assert sorted(p.name for p in run_dir.iterdir()) == [directory.LOCK_FILE]  # nothing else written
    finally:
        holder.kill()  # the OS releases a dead process's lock: no stale lock to clean up
        holder.wait()
    train(make_cfg(), run_dir)
    assert (run_dir / "checkpoints" / "last.pt").is_file()


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    with directory.lock(tmp_path):
        with directory.lock(tmp_path / "." ):
            pass
    probe = subprocess.run([sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a+'); "
                            "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)", str(tmp_path / directory.LOCK_FILE)])
    assert probe.returncode == 0


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, data_root) -> Path:
    """A tiny run made through the CLI (in this process): .hydra/ as ganctl writes it. One per
    module: its users only read it or check that it stayed byte for byte the same."""
    cwd = tmp_path_factory.mktemp("cli_run")
    run_dir = cwd / "runs" / "one"
    r = run_ganctl("train", *cli_args(data_root), f"hydra.run.dir={run_dir}", cwd=cwd)
    assert r.returncode == 0, r.stderr
    return run_dir


def snapshot(run_dir: Path) -> dict:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name not in ("train.log", directory.LOCK_FILE)}


@pytest.mark.parametrize("how", ["hydra.run.dir", "+hydra.run.dir", "++hydra.run.dir", "symlink", "sweep"])
def test_an_existing_run_is_refused_however_its_directory_is_named(cli_run, tmp_path, ganctl, data_root, how):
    before = snapshot(cli_run)
    assert ".hydra/config.yaml" in before and "checkpoints/last.pt" in before
    args = [*cli_args(data_root), "model.G.ngf=4"]
    if how == "sweep":
        args += ["-m", f"hydra.sweep.dir={cli_run.parent}", f"hydra.sweep.subdir={cli_run.name}"]
    elif how == "symlink":
        (tmp_path / "alias").symlink_to(cli_run)
        args.append(f"hydra.run.dir={tmp_path / 'alias'}")
    else:
        args.append(f"{how}={cli_run}")
    code, out, err = ganctl("train", *args, cwd=tmp_path)
    assert code != 0 and "already holds a run" in out + err
    assert snapshot(cli_run) == before  # .hydra/, checkpoints, logs: byte for byte


def test_checkpoint_files_get_the_mode_of_the_other_outputs(cli_run):
    mode = (cli_run / "metrics.jsonl").stat().st_mode & 0o777
    assert [(p.name, p.stat().st_mode & 0o777) for p in (cli_run / "checkpoints").iterdir()] == [
        (p.name, mode) for p in (cli_run / "checkpoints").iterdir()]


def poison_G_at(monkeypatch, bad_step: int):
    """Make G's weights NaN right after training step `bad_step` (a divergence between two logs)."""
    from ganctl.training.ema import AveragedGenerator
    original = AveragedGenerator.update

    def update(self, G, step):
        if step == bad_step:
            with torch.no_grad():
                next(G.parameters()).fill_(float("nan"))
        original(self, G, step)

    monkeypatch.setattr(AveragedGenerator, "update", update)


def test_nan_weights_never_become_best_pt_or_a_checkpoint(make_cfg, tmp_path, monkeypatch):
    # Evals every step, logs every 100: the divergence at step 3 falls between two loss checks.
    poison_G_at(monkeypatch, 3)
    cfg = make_cfg("trainer.max_steps=6", "trainer.eval_every=1", "trainer.eval_n=100", "trainer.log_every=100",
                   "trainer.ckpt_every=1", "trainer.sample_every=100")
    with pytest.raises(UserError, match="training diverged by step 3: the weights are not finite"):
        train(cfg, tmp_path)
    best, last = (load_checkpoint(tmp_path / "checkpoints" / name) for name in ("best.pt", "last.pt"))
    assert last["step"] == 2 and best["step"] <= 2
    for state in (best, last):
        assert all(t.isfinite().all() for name in ("G", "G_ema", "D") for t in state[name].values()
                   if t.is_floating_point())


def test_sample_and_eval_refuse_non_finite_weights(tiny_run, tmp_path, ganctl):
    state = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=True)
    next(iter(state["G_ema"].values())).fill_(float("inf"))
    torch.save(state, tmp_path / "diverged.pt")
    for command in ("sample", "eval"):
        code, _, err = ganctl(command, f"ckpt={tmp_path / 'diverged.pt'}", "n=8", cwd=tmp_path)
        one_line_error(code, err, "G_ema holds weights that are not finite")
    assert not (tmp_path / "samples.png").exists()


def test_a_failed_checkpoint_write_keeps_last_pt_and_leaves_no_temporary_file(make_cfg, tmp_path, monkeypatch):
    train(make_cfg("trainer.ckpt_every=1"), tmp_path)
    saved = torch.save

    def full_disk(obj, f):
        f.write(b"partial bytes")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(UserError, match=r"could not write checkpoint .*last.pt \(.* free there\); the previous "
                                        r"checkpoint there is intact"):
        train(make_cfg("trainer.max_steps=3", "trainer.ckpt_every=1", f"resume={tmp_path}"), tmp_path)
    monkeypatch.setattr(checkpoint.torch, "save", saved)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 2
    assert not list((tmp_path / "checkpoints").glob(".*"))


def test_a_resumed_run_removes_the_temporary_files_of_a_killed_writer(tiny_run, make_cfg):
    stale = tiny_run / "checkpoints" / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    with open(tiny_run / "metrics.jsonl", "a") as f:  # lines no run writes: skipped, not a traceback
        f.write('[1, 2]\n{"step": "x"}\n')
    train(make_cfg("trainer.max_steps=3", f"resume={tiny_run}"), tiny_run)
    assert not stale.exists() and load_checkpoint(tiny_run / "checkpoints" / "last.pt")["step"] == 3


@pytest.fixture()
def small_disk(tmp_path):
    """A 5 MB tmpfs (a real full disk); skipped where mounting is not allowed."""
    where = tmp_path / "disk"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_real_full_disk_is_one_line_and_keeps_a_resumable_checkpoint(small_disk, tmp_path, ganctl, data_root):
    run_dir = small_disk / "run"  # a tiny dcgan checkpoint is 3.6 MB: the second one cannot fit
    code, out, err = ganctl("train", *cli_args(data_root), "trainer.max_steps=4", "trainer.ckpt_every=1",
                            "trainer.keep_ckpts=0", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    one_line_error(code, err, f"could not write checkpoint {run_dir}", "free there")
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] >= 1


def test_one_failed_sweep_job_does_not_end_the_sweep(tmp_path, ganctl, data_root):
    code, _, err = ganctl("train", "-m", *cli_args(data_root), "optimizer.lr_g=-1,2e-4", cwd=tmp_path)
    assert code == 1 and "1 sweep job(s) failed (0_dcgan_bce)" in err
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    rows = (sweep / "summary.md").read_text().splitlines()
    assert rows[2].startswith("| 1_dcgan_bce | optimizer.lr_g=0.0002 | done |")
    assert rows[3].startswith("| 0_dcgan_bce | optimizer.lr_g=-1 | failed |") and "must be > 0" in rows[3]
    assert (sweep / "1_dcgan_bce" / "checkpoints" / "last.pt").is_file()


def test_a_sweep_with_a_typo_in_any_job_is_refused_before_it_starts(tmp_path, ganctl, data_root):
    code, _, err = ganctl("train", "-m", *cli_args(data_root), "trainer.batch_size=16,abc", cwd=tmp_path)
    one_line_error(code, err, "trainer.batch_size=abc")
    assert not (tmp_path / "outputs").exists()


def test_resume_under_an_awkward_path_also_with_the_printed_command(tmp_path, ganctl, data_root, monkeypatch):
    from ganctl.training.runtime import StopSignals
    run_dir = tmp_path / "runs (1), a=b ü's" / "run"
    # Stop at the first step as SIGTERM would, to get the command ganctl prints for continuing.
    monkeypatch.setattr(StopSignals, "install", lambda self: setattr(self, "signum", signal.SIGTERM))
    code, _, err = ganctl("train", *cli_args(data_root), "trainer.max_steps=4", f"hydra.run.dir={run_dir}",
                          cwd=tmp_path)
    line = one_line_error(code, err, "interrupted by SIGTERM at step 1")
    assert code == 128 + signal.SIGTERM
    monkeypatch.undo()
    command = shlex.split(line.split("continue with: ", 1)[1])
    assert command[:2] == ["ganctl", "train"]
    code, _, err = ganctl(*command[1:], cwd=tmp_path, env={"GANCTL_DATA": str(data_root)})
    assert code == 0, err
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 4
    code, _, err = ganctl("sample", f"ckpt={run_dir}", f"out={run_dir.parent / 'a (1).png'}", "n=4", cwd=tmp_path)
    assert code == 0 and (run_dir.parent / "a (1).png").is_file(), err


def test_ctrl_c_while_importing_is_one_line(tmp_path, data_root):
    # Tiny real data, no download: the run gets as far as importing torch (a missing dataset is
    # refused before that). The signal goes once torch's library is mapped (mid-import); where it
    # still came too late (the one-step run finished, exit 0: a loaded machine), the try repeats.
    import time
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "ganctl", "train", *cli_args(data_root), "trainer.max_steps=1",
                                 f"hydra.run.dir={tmp_path / str(attempt)}"], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                # as from an interactive shell: pytest started in the background of a
                                # script (`cmd &`, as CI may) inherits SIGINT ignored, and so would the child
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        maps = Path(f"/proc/{proc.pid}/maps")
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if maps.is_file() and "libtorch" in maps.read_text():
                break
            time.sleep(0.001)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            break
    assert proc.returncode == 130 and err.strip() == "ganctl: interrupted", err


def test_a_signal_during_a_quick_eval_abandons_it_saves_and_stops(make_cfg, tmp_path, monkeypatch):
    from ganctl.evaluation import metrics
    from ganctl.errors import Interrupted
    calls = []
    kid = metrics.kid

    def kid_then_sigterm(*args, **kwargs):  # the signal lands in the middle of the eval
        calls.append("kid")
        os.kill(os.getpid(), signal.SIGTERM)
        return kid(*args, **kwargs)

    monkeypatch.setattr(metrics, "kid", kid_then_sigterm)
    monkeypatch.setattr(metrics, "precision_recall", lambda *a, **k: calls.append("precision_recall"))
    cfg = make_cfg("trainer.max_steps=50", "trainer.eval_every=3", "trainer.eval_n=100", "trainer.ckpt_every=100")
    with pytest.raises(Interrupted, match="interrupted by SIGTERM at step 3"):
        train(cfg, tmp_path)
    assert calls == ["kid"]  # nothing after the signal ran
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 3
    assert not (tmp_path / "checkpoints" / "best.pt").exists()  # the abandoned eval counts for nothing


@pytest.mark.parametrize("craft,says", [
    (lambda s: s.update(cfg="x"), "cfg is not a dict"),
    (lambda s: s.update(step="x"), "step='x' is not a count"),
    (lambda s: s["cfg"]["model"].pop("G"), "cfg.model is not a model config"),
    (lambda s: s.update(G_ema=[1, 2]), "G_ema is not a state_dict of tensors"),
    (lambda s: s.update(rng={"torch": "seed"}), "rng is not a saved random state"),
    (lambda s: s["data"].update(img_size=10**6), "data.img_size=1000000 is not in [1, 1024]"),
    (lambda s: s["data"].update(clusters=[2**50, 1]), "data.clusters is not a list of 2 to 1000 cluster sizes"),
    (lambda s: s["data"].update(clusters=[1] * 5), "G_ema does not fit the network its saved config"),
    # Widths that would need terabytes: refused from shapes alone, before any memory is taken.
    (lambda s: s["cfg"]["model"]["G"].update(ngf=10**7), "G_ema does not fit the network its saved config"),
])
def test_a_malformed_checkpoint_is_one_line_before_anything_is_built(tiny_run, tmp_path, ganctl, craft, says):
    state = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=True)
    craft(state)
    torch.save(state, tmp_path / "crafted.pt")
    one_line_error(*ganctl("sample", f"ckpt={tmp_path / 'crafted.pt'}", "n=4", cwd=tmp_path)[::2], says)
