"""The `ganctl` command end to end, driven in this process as a user types it (conftest.run_ganctl);
one test starts the installed console script itself."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import one_line_error, options, run_ganctl

TINY = ["trainer.batch_size=16", "trainer.max_steps=3", "trainer.log_every=1", "trainer.sample_every=3",
        "trainer.progress=false", "trainer.device=cpu", "dataset.download=false"]


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ganctl: error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """One tiny cdcgan run and one tiny dcgan run, in a work folder with outputs/."""
    work = tmp_path_factory.mktemp("work")
    env = {"GANCTL_DATA": str(data_root)}
    runs = {}
    for model in ("dcgan", "cdcgan"):
        result = run_ganctl("train", f"model={model}", "model.G.ngf=8", "model.D.ndf=8", *TINY, cwd=work, env=env)
        assert result.returncode == 0, result.stderr
        runs[model] = next((work / "outputs").glob(f"*/*_{model}_bce"))
    return work, runs, env


def test_train_writes_a_complete_run_directory(trained):
    _, runs, _ = trained
    run = runs["cdcgan"]
    assert (run / ".hydra" / "config.yaml").is_file() and (run / ".hydra" / "overrides.yaml").is_file()
    assert (run / "train.log").read_text().count("run directory") == 1
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    for key in ("G", "D", "opt_G", "opt_D", "step", "epoch", "rng", "cfg"):
        assert key in state
    assert state["step"] == 3 and state["cfg"]["model"]["name"] == "cdcgan"
    assert Image.open(run / "samples" / "step_3.png").size == (302, 302)  # 10 x 10 tiles of 28 + 2 px
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    for name in ("Loss/D", "Loss/G", "D/real", "D/fake", "Time/img_per_s"):
        assert name in scalars and [e.step for e in events.Scalars(name)] == [1, 2, 3]
    assert "samples" in events.Tags()["images"]


def test_train_says_where_its_wall_time_went(trained):
    _, runs, _ = trained
    run = runs["dcgan"]
    result = json.loads((run / "result.json").read_text())
    startup, loop, evals, end = (result[f"Time/{k}_s"] for k in ("startup", "loop", "eval", "end"))
    assert startup > 0 and loop > 0 and end > 0
    assert 0 < evals < loop  # the quick eval at the last step runs inside the loop
    assert "wall time" in (run / "train.log").read_text()


def test_wgan_gp_logs_its_penalty(tmp_path, data_root):
    result = run_ganctl("train", "model=gan", "loss=wgan_gp", "model.G.hidden=[16]", "model.D.hidden=[16]",
                        *TINY, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env={"GANCTL_DATA": str(data_root)})
    assert result.returncode == 0, result.stderr
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    assert len(events.Scalars("Loss/GP")) == 3


def test_multirun_makes_one_directory_per_job(tmp_path, data_root):
    # -m after the overrides on purpose: the dispatcher moves it where Hydra 1.3 wants it.
    result = run_ganctl("train", "loss=bce,lsgan", "model=gan", "model.G.hidden=[16]", "model.D.hidden=[16]",
                        *TINY, "trainer.eval_every=null", "-m", cwd=tmp_path, env={"GANCTL_DATA": str(data_root)})
    assert result.returncode == 0, result.stderr
    # A sweep's jobs without evals hand the sweeper nothing: each says so (a single run does not, below).
    assert (result.stdout + result.stderr).count("optimized_metric=Eval/fid is not in this run's result") == 2
    jobs = sorted(p.name for p in (tmp_path / "outputs" / "multirun").glob("*/*/*") if p.is_dir())
    assert jobs == ["0_gan_bce", "1_gan_lsgan"]
    for job in (tmp_path / "outputs" / "multirun").glob("*/*/*_gan_*"):
        assert (job / "checkpoints" / "last.pt").is_file()
    # The second job, in the same process, counts its start-up from its own beginning.
    first, second = (json.loads(next((tmp_path / "outputs" / "multirun").glob(f"*/*/{job}/result.json")).read_text())
                     for job in jobs)
    assert second["Time/startup_s"] < first["Time/startup_s"] + first["Time/loop_s"]


def test_a_single_run_without_evals_does_not_warn_about_the_sweep_metric(tmp_path, data_root):
    result = run_ganctl("train", "model=gan", "model.G.hidden=[16]", "model.D.hidden=[16]", *TINY,
                        "trainer.eval_every=null", cwd=tmp_path, env={"GANCTL_DATA": str(data_root)})
    assert result.returncode == 0, result.stderr
    assert "finished 3 steps" in result.stdout + result.stderr  # the log reaches these streams
    assert "optimized_metric" not in result.stdout + result.stderr


def test_sample_png_and_npz(trained):
    work, runs, _ = trained
    result = run_ganctl("sample", "label=5", "n=12", "out=fives.png", cwd=work)
    assert result.returncode == 0, result.stderr
    assert "cdcgan" in result.stdout  # says which run it used: the newest
    assert Image.open(work / "fives.png").size == (2 + 4 * 30, 2 + 3 * 30)  # 12 images, 4 per row

    result = run_ganctl("sample", f"ckpt={runs['cdcgan']}", "label=[1,7]", "n=10", "out=pair.npz", cwd=work)
    assert result.returncode == 0, result.stderr
    arrays = np.load(work / "pair.npz")
    assert arrays["images"].shape == (10, 1, 28, 28) and arrays["images"].dtype == np.uint8
    assert arrays["labels"].tolist() == [1] * 5 + [7] * 5


def test_sample_class_grid_and_folder_output(trained):
    work, runs, _ = trained
    ckpt = runs["cdcgan"] / "checkpoints" / "last.pt"
    assert run_ganctl("sample", f"ckpt={ckpt}", "out=grid.png", cwd=work).returncode == 0
    assert Image.open(work / "grid.png").size == (302, 302)  # a row per class, 10 per row
    assert run_ganctl("sample", f"ckpt={runs['dcgan']}", "n=3", "out=pngs", cwd=work).returncode == 0
    assert sorted(p.name for p in (work / "pngs").iterdir()) == ["000000.png", "000001.png", "000002.png"]


def test_sample_is_seeded(trained):
    work, runs, _ = trained
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        run_ganctl("sample", f"ckpt={runs['dcgan']}", "n=4", f"seed={seed}", f"out={name}.npz", cwd=work)
    a, b, c = (np.load(work / f"{n}.npz")["images"] for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("args,fragments", [
    (["label=11"], ["label=11", "0..9"]),
    (["label=5", "dcgan"], ["unconditional"]),
    (["ckpt=/no/such/path"], ["/no/such/path", "does not exist"]),
])
def test_sample_bad_input_is_one_line(trained, args, fragments):
    work, runs, _ = trained
    if "dcgan" in args:
        args = [a for a in args if a != "dcgan"] + [f"ckpt={runs['dcgan']}"]
    assert_one_line_error(run_ganctl("sample", *args, cwd=work), *fragments)


def test_sample_without_runs_says_where_it_looked(tmp_path):
    assert_one_line_error(run_ganctl("sample", cwd=tmp_path), str(tmp_path / "outputs"))


def test_missing_data_is_one_line_naming_where_it_looked(tmp_path):
    result = run_ganctl("train", *TINY, cwd=tmp_path, env={"GANCTL_DATA": str(tmp_path / "empty")})
    assert_one_line_error(result, str(tmp_path / "empty" / "MNIST" / "raw"), "GANCTL_DATA")


def test_existing_run_directory_is_refused_before_hydra_touches_it(trained):
    work, runs, env = trained
    saved = (runs["dcgan"] / ".hydra" / "config.yaml").read_text()
    result = run_ganctl("train", *TINY, f"hydra.run.dir={runs['dcgan']}", "model.G.ngf=16", cwd=work, env=env)
    assert_one_line_error(result, "already holds a run")
    assert (runs["dcgan"] / ".hydra" / "config.yaml").read_text() == saved


def test_help_lists_config_groups_and_cfg_job_prints_the_config(tmp_path):
    result = run_ganctl("train", "--help", cwd=tmp_path, process=True)  # the console script itself
    assert result.returncode == 0
    for group in ("model", "loss", "dataset", "optimizer", "trainer"):
        assert f"{group}:" in result.stdout
    for option in options("model") + options("loss"):
        assert option in result.stdout
    choices = result.stdout.split("== Config ==")[0]
    assert "schema" not in choices and "model_loss" not in choices  # neither is chosen by hand
    result = run_ganctl("train", "--cfg", "job", "model=cdcgan", "loss=wgan_gp", cwd=tmp_path)
    assert result.returncode == 0 and "name: cdcgan" in result.stdout and "gp_weight: 10.0" in result.stdout
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("command", ["sample", "eval", "summary", "fit-classifier"])
def test_every_command_has_help(tmp_path, command):
    result = run_ganctl(command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ganctl {command}:") and "== Config ==" in result.stdout


def test_unknown_command_and_bare_ganctl(tmp_path):
    assert_one_line_error(run_ganctl("fit", cwd=tmp_path), "fit", "train", "sample")
    result = run_ganctl(cwd=tmp_path)
    assert result.returncode == 0 and "train" in result.stdout and "sample" in result.stdout


def test_shell_completion_sees_past_the_subcommand(tmp_path):
    result = run_ganctl("-sc", "query=bash", cwd=tmp_path, env={"COMP_LINE": "ganctl train model="})
    assert result.returncode == 0, result.stderr
    for model in options("model"):
        assert f"model={model}" in result.stdout


def test_sample_asks_for_at_least_one_image(trained):
    work, runs, _ = trained
    assert_one_line_error(run_ganctl("sample", f"ckpt={runs['dcgan']}", "n=0", cwd=work), "n=0")


def test_sample_interpolations_write_a_strip_and_a_gif(trained):
    work, runs, _ = trained
    r = run_ganctl("sample", f"ckpt={runs['cdcgan']}", "interpolate=z", "n=3", "steps=5", "spherical=true",
                   "out=walk.png", cwd=work)
    assert r.returncode == 0, r.stderr
    assert Image.open(work / "walk.png").size == (2 + 5 * 30, 2 + 3 * 30)  # a row per path, a column per step
    assert Image.open(work / "walk.gif").n_frames == 5 + 3  # there and back again
    r = run_ganctl("sample", f"ckpt={runs['cdcgan']}", "interpolate=label", "label=[1,7]", "n=2", "steps=4",
                   "out=morph.png", cwd=work)
    assert r.returncode == 0, r.stderr
    assert Image.open(work / "morph.png").size == (2 + 4 * 30, 2 + 2 * 30)
    r = run_ganctl("sample", f"ckpt={runs['dcgan']}", "interpolate=true", cwd=work)
    assert r.returncode == 0 and (work / "interpolation.png").is_file() and (work / "interpolation.gif").is_file()


@pytest.mark.parametrize("args,fragments", [
    (["interpolate=label", "dcgan"], ["conditional"]),
    (["interpolate=label", "label=3"], ["label=[a,b]"]),
    (["interpolate=wobble"], ["interpolate=wobble", "z or label"]),
    (["interpolate=z", "steps=1"], ["steps=1"]),
])
def test_sample_interpolation_bad_input_is_one_line(trained, args, fragments):
    work, runs, _ = trained
    ckpt = runs["dcgan"] if "dcgan" in args else runs["cdcgan"]
    args = [a for a in args if a != "dcgan"]
    assert_one_line_error(run_ganctl("sample", f"ckpt={ckpt}", *args, cwd=work), *fragments)


def test_sample_never_overwrites_its_default_output_and_names_the_run_it_used(tiny_run, tmp_path, ganctl):
    for _ in range(2):
        code, out, err = ganctl("sample", f"ckpt={tiny_run}", "n=4", cwd=tmp_path)
        assert code == 0, err
    assert "samples_1.png" in out and (tmp_path / "samples.png").is_file() and (tmp_path / "samples_1.png").is_file()
    code, _, err = ganctl("sample", f"ckpt={tiny_run}", "label=5", cwd=tmp_path)
    assert code == 2 and "unconditional" in err and f"model=dcgan of {tiny_run / 'checkpoints' / 'last.pt'}" in err


def test_version_and_completion_of_the_command_word(tmp_path, ganctl, capsys, monkeypatch):
    import ganctl as package
    assert ganctl("--version", cwd=tmp_path)[1].strip() == f"ganctl {package.__version__}"
    monkeypatch.setenv("COMP_LINE", "ganctl tr")
    assert ganctl("-sc", "query=bash", cwd=tmp_path)[1].split() == ["train"]
    monkeypatch.setenv("COMP_LINE", "ganctl train mod")
    assert ganctl("-sc", "query=bash", cwd=tmp_path)[1].split() == ["model.", "model="]  # not model_loss=
    monkeypatch.delenv("COMP_LINE")
    code, out, _ = ganctl("-sc", "install=bash", cwd=tmp_path)
    assert code == 0 and "complete" in out  # the snippet for ~/.bashrc


def test_off_a_terminal_training_logs_a_line_per_log_step_instead_of_a_bar(tmp_path, ganctl, data_root):
    from conftest import SHRINK
    code, out, err = ganctl("train", *SHRINK, "trainer.progress=true", "trainer.max_steps=2",
                            f"dataset.root={data_root}", "dataset.download=false", "model.G.ngf=8", "model.D.ndf=8",
                            f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert code == 0, err
    log = (tmp_path / "run" / "train.log").read_text()
    assert "step 1/2: Loss/D" in log and "step 2/2: Loss/D" in log
    assert "\r" not in out + err and "it/s" not in out + err  # no tqdm redraws in a log


def test_a_folder_run_samples_its_classes_by_name_or_index(tmp_path, make_cfg, ganctl, image_folder):
    from ganctl.training.loop import train
    train(make_cfg("model=cdcgan", "dataset=folder", f"dataset.root={image_folder}", "dataset.img_size=16"),
          tmp_path / "run")
    code, out, err = ganctl("sample", "ckpt=run", "out=all.png", cwd=tmp_path)
    assert code == 0 and out.strip().endswith("a row per class: cats, dogs"), err
    for label in ("dogs", "1"):
        assert ganctl("sample", "ckpt=run", f"label={label}", f"out={label}.png", cwd=tmp_path)[0] == 0
    assert (tmp_path / "dogs.png").read_bytes() == (tmp_path / "1.png").read_bytes()
    one_line_error(*ganctl("sample", "ckpt=run", "label=birds", cwd=tmp_path)[::2],
                   "label='birds' is not a class of this model: labels are 0..1 or a name: cats, dogs")
