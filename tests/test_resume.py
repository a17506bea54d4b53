"""Resume continues exactly; SIGKILL loses nothing a checkpoint held; SIGINT/SIGTERM save and stop."""
import signal
import subprocess
import sys
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import run_ganctl
from ganctl.run.checkpoint import load_checkpoint
from ganctl.errors import UserError
from ganctl.training.loop import train

STATES = ("G", "G_ema", "D", "opt_G", "opt_D")


def assert_same_state(a: dict, b: dict) -> None:
    for name in STATES:
        flat_a, flat_b = _tensors(a[name]), _tensors(b[name])
        assert flat_a.keys() == flat_b.keys()
        for k in flat_a:
            assert torch.equal(flat_a[k], flat_b[k]), f"{name}.{k} differs"
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"]


def _tensors(d, prefix=""):
    out = {}
    for k, v in (d.items() if isinstance(d, dict) else enumerate(d)):
        if isinstance(v, (dict, list)):
            out.update(_tensors(v, f"{prefix}{k}."))
        elif isinstance(v, torch.Tensor):
            out[f"{prefix}{k}"] = v
    return out


# gan has dropout in D and wgan_gp draws interpolation coefficients: both use the RNG mid-step;
# lazy R1 every 2 D updates, stopped after 3: the resumed run must keep its phase.
@pytest.mark.parametrize("model,loss,extra", [("dcgan", "bce", []), ("gan", "wgan_gp", []),
                                              ("dcgan", "hinge", ["loss.r1=1", "loss.r1_every=2"])])
def test_resumed_run_equals_an_uninterrupted_one_bit_for_bit(make_cfg, tmp_path, model, loss, extra):
    common = [f"model={model}", f"loss={loss}", "trainer.deterministic=true", "trainer.ckpt_every=100", *extra]
    train(make_cfg(*common, "trainer.max_steps=7"), tmp_path / "straight")
    train(make_cfg(*common, "trainer.max_steps=3"), tmp_path / "stopped")
    train(make_cfg(*common, "trainer.max_steps=7", f"resume={tmp_path / 'stopped'}"), tmp_path / "stopped")
    assert_same_state(load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt"),
                      load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt"))


def test_resume_warns_about_config_changes_and_refuses_another_model(make_cfg, tmp_path, caplog):
    train(make_cfg("trainer.max_steps=2"), tmp_path)
    train(make_cfg("trainer.max_steps=3", f"resume={tmp_path}"), tmp_path)
    assert "trainer.max_steps: 2 -> 3" in caplog.text
    with pytest.raises(UserError, match="model=dcgan, which does not fit model=gan"):
        train(make_cfg("model=gan", "trainer.max_steps=4", f"resume={tmp_path}"), tmp_path)


def test_a_run_saved_before_the_folders_resumes_without_a_warning_about_its_moved_loss(make_cfg, tmp_path, caplog):
    train(make_cfg("trainer.max_steps=2"), tmp_path)
    last = tmp_path / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["cfg"]["loss"]["_target_"] = "ganctl.losses.BCE"  # as runs saved before ganctl/training/ name it
    torch.save(state, last)
    assert load_checkpoint(last)["cfg"]["loss"]["_target_"] == "ganctl.training.losses.BCE"
    train(make_cfg("trainer.max_steps=3", f"resume={tmp_path}"), tmp_path)
    assert "trainer.max_steps: 2 -> 3" in caplog.text and "_target_" not in caplog.text


def test_resume_with_another_n_critic_continues_from_the_batches_seen(make_cfg, tmp_path):
    train(make_cfg("model=gan", "loss=wgan", "trainer.max_steps=2"), tmp_path)  # 2 steps x 5 D batches
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["batch"] == 10
    train(make_cfg("model=gan", "loss=wgan", "loss.n_critic=1", "trainer.max_steps=5", f"resume={tmp_path}"),
          tmp_path)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["batch"] == 13  # 10 + 3 steps x 1


def test_resume_at_the_end_does_nothing(make_cfg, tmp_path):
    train(make_cfg(), tmp_path)
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    assert train(make_cfg(f"resume={tmp_path}"), tmp_path) == {"step": 2}
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before


SMALL_DCGAN = ["model=dcgan", "model.G.ngf=16", "model.D.ndf=16"]
RUN = ["trainer.batch_size=16", "trainer.progress=false",
            "trainer.device=cpu", "trainer.deterministic=true", "dataset.download=false", "trainer.log_every=5",
            "trainer.sample_every=1000"]


def start_ganctl(*args, cwd, env):
    import os
    exe = [sys.executable, "-m", "ganctl"]
    return subprocess.Popen([*exe, *args], cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(run_dir, proc, min_step: int, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = [int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*.pt")]
        if steps and max(steps) >= min_step:
            return max(steps)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint in time")


@pytest.mark.processes
def test_sigkill_then_resume_ends_bit_identical_to_an_uninterrupted_run(tmp_path, data_root):
    env = {"GANCTL_DATA": str(data_root)}
    args = [*SMALL_DCGAN, *RUN, "trainer.max_steps=120", "trainer.ckpt_every=7"]
    straight = run_ganctl("train", *args, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path, env=env,
                          process=True)  # as the killed run below: a process of its own, its threads
    assert straight.returncode == 0, straight.stderr

    run_dir = tmp_path / "killed"
    proc = start_ganctl("train", *args, f"hydra.run.dir={run_dir}", cwd=tmp_path, env=env)
    wait_for_checkpoint(run_dir, proc, min_step=14)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished
    killed_at = load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"]
    assert killed_at < 120

    resumed = run_ganctl("train", f"resume={run_dir}", cwd=tmp_path, env=env, process=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_state(load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt"),
                      load_checkpoint(run_dir / "checkpoints" / "last.pt"))
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    steps = [e.step for e in events.Scalars("Loss/D")]
    assert steps == sorted(set(steps)) and steps[-1] == 120  # no duplicate points after the resume


@pytest.mark.processes
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_finishes_the_step_saves_and_exits_non_zero(tmp_path, data_root, sig):
    run_dir = tmp_path / "run"
    proc = start_ganctl("train", *SMALL_DCGAN, *RUN, "trainer.max_steps=100000", "trainer.ckpt_every=5",
                        f"hydra.run.dir={run_dir}", cwd=tmp_path, env={"GANCTL_DATA": str(data_root)})
    wait_for_checkpoint(run_dir, proc, min_step=5)
    sent = time.time()
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    assert time.time() - sent < 10
    assert proc.returncode == 128 + sig
    lines = [line for line in stderr.splitlines() if line.strip() and "it/s" not in line]
    assert len(lines) == 1 and f"interrupted by {signal.Signals(sig).name}" in lines[0], stderr
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert f"at step {state['step']};" in lines[0] and f"resume={run_dir}" in lines[0]


def test_resume_through_the_cli_repeats_no_overrides_and_keeps_the_original_hydra_files(tmp_path, data_root):
    env = {"GANCTL_DATA": str(data_root)}
    run_dir = tmp_path / "run"
    first = run_ganctl("train", *RUN, "model=cgan", "model.G.hidden=[16]", "model.D.hidden=[16]",
                       "trainer.max_steps=4", f"hydra.run.dir={run_dir}", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    saved = {p.name: p.read_text() for p in (run_dir / ".hydra").iterdir()}
    again = run_ganctl("train", f"resume={run_dir}", "trainer.max_steps=6", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["cfg"]["model"]["name"] == "cgan"
    assert {p.name: p.read_text() for p in (run_dir / ".hydra").iterdir()} == saved
    assert "resume keeps" not in again.stderr  # no default has changed since this run
    assert "trainer.max_steps: 4 -> 6" in (run_dir / "train.log").read_text()
    refused = run_ganctl("train", "-m", f"resume={run_dir}", cwd=tmp_path, env=env)
    assert refused.returncode != 0 and "cannot be combined with -m" in refused.stderr


OLD_DEFAULTS = ["model.clusters=0", "trainer.label_smoothing=0.1", "augment.translation=0.25"]


@pytest.fixture(scope="module")
def run_of_old_defaults(tmp_path_factory, data_root):
    """A tiny run trained with OLD_DEFAULTS, whose overrides.yaml does not name them: as if they had
    been the defaults then. Trained once; each test resumes a copy."""
    import yaml
    from conftest import SHRINK, TINY_MODEL, _in_process
    cwd = tmp_path_factory.mktemp("old")
    args = [*SHRINK, *TINY_MODEL["dcgan"], f"dataset.root={data_root}", "dataset.download=false"]
    assert _in_process(["train", *args, *OLD_DEFAULTS, "hydra.run.dir=run"], cwd, {}).returncode == 0
    saved = cwd / "run" / ".hydra" / "overrides.yaml"
    saved.write_text(yaml.safe_dump([o for o in yaml.safe_load(saved.read_text()) if o not in OLD_DEFAULTS]))
    return cwd / "run"


# Nothing named now; a key named now wins over its saved value; so does a group named now, over its keys.
@pytest.mark.parametrize("now", [[], ["trainer.label_smoothing=0.2"], ["augment=diffaug"]])
def test_resume_keeps_the_saved_values_of_defaults_that_changed_since(tmp_path, run_of_old_defaults, ganctl, now):
    import shutil
    shutil.copytree(run_of_old_defaults, tmp_path / "run")
    code, _, err = ganctl("train", "resume=run", "trainer.max_steps=4", *now, cwd=tmp_path)
    assert code == 0, err
    cfg = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["cfg"]
    assert cfg["trainer"]["max_steps"] == 4 and cfg["model"]["clusters"] == 0
    assert cfg["trainer"]["label_smoothing"] == (0.2 if now[:1] == ["trainer.label_smoothing=0.2"] else 0.1)
    assert cfg["augment"]["translation"] == (0.125 if now[:1] == ["augment=diffaug"] else 0.25)
    assert "resume keeps the run's model.clusters=0 (the default is 30 now)" in err
    assert "trainer.max_steps" not in err and "dataset.root" not in err
