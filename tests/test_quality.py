"""The quality bar on the real MNIST (slow: CI runs it with GANCTL_DATA set; skipped without the data).

    GANCTL_DATA=../shared/data python -m pytest -m slow tests/test_quality.py

Each run uses the shipped defaults through the `ganctl` command and is judged by the tool's own
`ganctl eval` (10,000 samples, classifier features); docs/results.md has the measured figures.
"""
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import load_script, options, run_ganctl

DATA = os.environ.get("GANCTL_DATA")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not DATA or not (Path(DATA) / "MNIST" / "raw").is_dir(),
                                 reason="needs the real MNIST: set GANCTL_DATA")]
# The bar's 936 steps at batch 128: ganctl steps, each one G update after loss.n_critic D updates
# (the WGAN papers and StudioGAN count generator iterations the same way). That is 2 epochs for the
# losses with one D update a step and 10 epochs of critic data for wgan and wgan_gp (5 each).
CHECKED_STEPS = 936
# The guard over every other model x loss pair: a smoke test that each trains on the real data
# without a NaN and without G emitting one image. GUARD_STEPS steps at GUARD_BATCH (5-30 seconds a
# pair on a 2-core CPU, so that CI keeps its 30 minutes; fewer G steps leave a conv G near its
# initial, nearly constant output); what each pair reaches at the checked steps is measured by
# benchmarks/quality.py (docs/results.md's first table), not here.
GUARD_STEPS = 50
GUARD_BATCH = 32
# The pairs that the bar's own runs (the fixtures below) train with the shipped defaults
# (loss=bce): the guard judges those runs instead of training them again.
BAR_RUNS = {("cdcgan", "bce"): "cdcgan_2_epochs", ("dcgan", "bce"): "dcgan_2_epochs"}
# model=resnet takes 32-128 px: the guard trains it on the real MNIST written as a 32 px RGB folder
# (benchmarks/mnist_folder.py), at an eighth of its widths (ch 32: 4.5 min for wgan_gp's 50 steps; ch 4: 25 s).
RESNET_GUARD = ["dataset=folder", "dataset.img_size=32", "model.G.ch=4", "model.D.ch=4"]


@pytest.fixture(scope="module")
def real_cache():
    """The real data's classifier is fitted once and kept between CI runs where the cache persists.
    GANCTL_DATA is made absolute: each run starts in its own temporary directory, where the
    README's relative ../shared/data would point nowhere."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GANCTL_DATA", str(Path(DATA).resolve()))
        env.setenv("GANCTL_CACHE", os.environ.get("GANCTL_REAL_CACHE", str(Path.home() / ".cache" / "ganctl")))
        yield


@pytest.fixture(scope="module")
def mnist_folder_32(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist32")
    load_script("mnist_folder").main([str(root), "--size", "32", "--n", "2000", "--data", str(Path(DATA).resolve())])
    return root


def train_and_eval(tmp_path, *overrides, n=10_000):
    """Train through `ganctl train`, judge the last checkpoint with `ganctl eval`: (metrics, the
    eval.json, the run directory). The quick evals are off: they never change the training
    (test_eval.py checks that) and would cost CI half a minute."""
    run_dir = tmp_path / "run"
    r = run_ganctl("train", *overrides, "dataset.download=false", "trainer.progress=false", "trainer.eval_every=null",
                   f"hydra.run.dir={run_dir}", cwd=tmp_path, timeout=3600)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_ganctl("eval", f"ckpt={run_dir}", "which=last", f"n={n}", cwd=tmp_path, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((run_dir / "eval.json").read_text())
    return {k: v["value"] for k, v in result["metrics"].items()}, result, run_dir


@pytest.fixture(scope="module")
def cdcgan_2_epochs(real_cache, tmp_path_factory):
    return train_and_eval(tmp_path_factory.mktemp("cdcgan"), "model=cdcgan", f"trainer.max_steps={CHECKED_STEPS}")


@pytest.fixture(scope="module")
def dcgan_2_epochs(real_cache, tmp_path_factory):
    return train_and_eval(tmp_path_factory.mktemp("dcgan"), "model=dcgan", f"trainer.max_steps={CHECKED_STEPS}")


def test_conditional_dcgan_meets_the_quality_bar(cdcgan_2_epochs):
    # Issue 40's figures with the defaults of 2026-12-06 (docs/results.md): 11.8x and 11.6x the
    # floor, 99.1% and 99.4% read as asked (seeds 0, 1); the margins leave room for seed spread,
    # and without the AC-GAN head (98.2-98.4%) the label line fails.
    m, result, _ = cdcgan_2_epochs
    assert result["classifier_test_acc"] >= 0.99
    assert m["label_acc"] >= 0.985
    assert m["fid"] <= 15 * m["fid_floor"]
    assert m["recall"] >= 0.7  # measured 0.80, 0.79


def test_dcgan_draws_every_digit(dcgan_2_epochs):
    # Self-conditioned on 30 k-means clusters (the default since 2026-12-06): 35x and 31x the floor,
    # recall 0.80 and 0.79 (seeds 0, 1); with 10 clusters 63-64x, without them 177-195x.
    m, _, _ = dcgan_2_epochs
    assert m["label_tv"] <= 0.2  # measured 0.045 and 0.052, 10,000 images; 0.23 at the old Adam 2e-4
    assert m["recall"] >= 0.72
    assert m["fid"] <= 45 * m["fid_floor"]


def test_dcgan_draws_every_digit_in_near_equal_shares(dcgan_2_epochs):
    # TV between the predicted-label distributions of real and generated images: 0.1 allows,
    # for example, every class within about +-2 points of its real share. Measured with the
    # dcgan's 30 clusters: 0.045 and 0.052 on seeds 0, 1 (0.088-0.109 without); this test runs seed 0,
    # so it checks the defaults at one seed, not that every seed is under the line.
    m, _, _ = dcgan_2_epochs
    assert m["label_tv"] <= 0.1


@pytest.mark.parametrize("model,loss", list(itertools.product(options("model"), options("loss"))))
def test_every_model_and_loss_trains_without_nan_or_collapse(real_cache, tmp_path, request, ganctl, model, loss):
    if (model, loss) in BAR_RUNS:
        run_dir = request.getfixturevalue(BAR_RUNS[model, loss])[2]
    else:  # in this process (no process boundary is the point); a NaN stops training with exit 1
        run_dir = tmp_path / "run"
        data = ([*RESNET_GUARD, f"dataset.root={request.getfixturevalue('mnist_folder_32')}"] if model == "resnet"
                else ["dataset.download=false"])
        code, _, err = ganctl("train", f"model={model}", f"loss={loss}", *data, f"trainer.max_steps={GUARD_STEPS}",
                              f"trainer.batch_size={GUARD_BATCH}",
                              "trainer.eval_every=null", "trainer.sample_every=1000",
                              "trainer.progress=false", f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert code == 0, err[-2000:]
    # Mode collapse makes the samples alike: their per-pixel spread across samples falls towards 0
    # (real MNIST on the [-1, 1] scale: 0.38 over all images, 0.19-0.36 within one digit). Early,
    # noisy generators still vary; a collapsed one does not.
    code, _, err = ganctl("sample", f"ckpt={run_dir}", "n=500", "out=s.npz", cwd=tmp_path)
    assert code == 0, err
    arrays = np.load(tmp_path / "s.npz")
    images = arrays["images"].astype(np.float32) / 127.5 - 1
    spread = images.std(axis=0).mean()
    assert spread >= 0.15, f"{model} x {loss}: the samples' spread is {spread:.3f}"
