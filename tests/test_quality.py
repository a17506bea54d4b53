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
from omegaconf import OmegaConf

from conftest import REPO, options, run_ganctl

DATA = os.environ.get("GANCTL_DATA")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not DATA or not (Path(DATA) / "MNIST" / "raw").is_dir(),
                                 reason="needs the real MNIST: set GANCTL_DATA")]
# The bar's 936 steps at batch 128: ganctl steps, each one G update after loss.n_critic D updates
# (the WGAN papers and StudioGAN count generator iterations the same way). That is 2 epochs for the
# losses with one D update a step and 10 epochs of critic data for wgan and wgan_gp (5 each).
CHECKED_STEPS = 936
# Every model x loss pair trains the checked steps where that takes about a minute on a 2-core CPU
# (the MLP models with one D update a step); the others train SHORT_STEPS so that CI fits in its
# time on the slower machines (a conv pair's 936 steps take 6-28 minutes, an MLP pair's with 5 D
# updates 4-8). The MLP pairs with 5 D updates also run the checked steps under the `long` marker,
# left out of CI: `-m slow` runs them, `-m "slow and not long"` is what CI runs.
SHORT_STEPS = 100
MLP_MODELS = ("gan", "cgan")
# The pairs that the bar's own runs (the fixtures below) train with the shipped defaults
# (loss=bce): the matrix judges those runs, at the checked steps, instead of training them again.
BAR_RUNS = {("cdcgan", "bce"): "cdcgan_2_epochs", ("dcgan", "bce"): "dcgan_2_epochs"}


def n_critic(loss: str) -> int:
    return OmegaConf.load(REPO / "conf" / "loss" / f"{loss}.yaml").get("n_critic", 1)


def pair_cases():
    """(model, loss, steps) for every pair, with the long runs marked."""
    for model, loss in itertools.product(options("model"), options("loss")):
        if (model, loss) in BAR_RUNS:
            yield model, loss, CHECKED_STEPS
        elif model not in MLP_MODELS:
            yield model, loss, SHORT_STEPS
        elif n_critic(loss) == 1:
            yield model, loss, CHECKED_STEPS
        else:
            yield model, loss, SHORT_STEPS
            yield pytest.param(model, loss, CHECKED_STEPS, marks=pytest.mark.long)


@pytest.fixture(scope="module")
def real_cache():
    """The real data's classifier is fitted once and kept between CI runs where the cache persists.
    GANCTL_DATA is made absolute: each run starts in its own temporary directory, where the
    README's relative ../shared/data would point nowhere."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GANCTL_DATA", str(Path(DATA).resolve()))
        env.setenv("GANCTL_CACHE", os.environ.get("GANCTL_REAL_CACHE", str(Path.home() / ".cache" / "ganctl")))
        yield


def train_and_eval(tmp_path, *overrides, n=10_000):
    """Train through `ganctl train`, judge the last checkpoint with `ganctl eval`: (metrics, the
    eval.json, the run directory)."""
    run_dir = tmp_path / "run"
    r = run_ganctl("train", *overrides, "dataset.download=false", "trainer.progress=false",
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
    # Issue 3's bar. Measured with the defaults on 2026-11-23 (docs/results.md): seed 0 reached
    # FID 16.7x the floor and label accuracy 98.5%; at Adam's old 2e-4 it was 102-116x and 93-95%.
    m, result, _ = cdcgan_2_epochs
    assert result["classifier_test_acc"] >= 0.99
    assert m["label_acc"] >= 0.97
    assert m["fid"] <= 25 * m["fid_floor"]


def test_dcgan_draws_every_digit(dcgan_2_epochs):
    m, _, _ = dcgan_2_epochs
    assert m["label_tv"] <= 0.2  # measured 0.088 (seed 0), 10,000 images; 0.23 at the old Adam 2e-4
    assert m["recall"] >= 0.3


def test_dcgan_draws_every_digit_in_near_equal_shares(dcgan_2_epochs):
    # TV between the predicted-label distributions of real and generated images: 0.1 allows,
    # for example, every class within about +-2 points of its real share. Measured with the
    # dcgan's Adam betas (0, 0.99): 0.088, 0.109, 0.088 on seeds 0, 1, 2; this test runs seed 0,
    # so it checks the defaults at one seed, not that every seed is under the line.
    m, _, _ = dcgan_2_epochs
    assert m["label_tv"] <= 0.1


@pytest.mark.parametrize("model,loss,steps", list(pair_cases()))
def test_every_model_and_loss_trains_without_nan_or_collapse(real_cache, tmp_path, request, model, loss, steps):
    # A NaN stops training with a non-zero exit, which train_and_eval asserts against.
    if (model, loss) in BAR_RUNS:
        m, _, run_dir = request.getfixturevalue(BAR_RUNS[model, loss])
    else:  # the quick evals during training are not what is judged here: off, to save CI's time
        m, _, run_dir = train_and_eval(tmp_path, f"model={model}", f"loss={loss}", f"trainer.max_steps={steps}",
                                       "trainer.eval_every=null", n=2000)
    assert m["fid"] == m["fid"]  # finite metrics from finite images
    # Mode collapse makes the samples alike: their per-pixel spread across samples falls towards 0
    # (real MNIST on the [-1, 1] scale: 0.38 over all images, 0.19-0.36 within one digit). Early,
    # noisy generators still vary; a collapsed one does not. A conditional G that ignores z draws
    # one image per label: there the spread within each label is what falls (cgan+lsgan at Adam
    # 1e-3 did that: 0.06).
    r = run_ganctl("sample", f"ckpt={run_dir}", "n=500", "out=s.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    arrays = np.load(tmp_path / "s.npz")
    images = arrays["images"].astype(np.float32) / 127.5 - 1
    assert images.std(axis=0).mean() >= 0.15
    if model not in MLP_MODELS or steps < CHECKED_STEPS:
        return  # after 100 steps a G is still forming: one blob per label, digits read as one class
    conditional = model == "cgan"
    spreads = [images[arrays["labels"] == k].std(axis=0).mean() for k in range(10)] if conditional else []
    varied = not conditional or np.mean(spreads) >= 0.1
    # After 936 steps the MLP models draw digits of every kind: rough, but the classifier reads
    # their labels (cgan: label accuracy 68-87% with bce, hinge, lsgan, wgan_gp; gan: label TV
    # 0.10-0.32; docs/results.md).
    formed = m["label_acc"] >= 0.5 if conditional else m["label_tv"] <= 0.5
    # cgan+lsgan was fragile at Adam 1e-3 (label accuracy 17-74%, within-label spread 0.09 at this
    # test's seed); at cgan's 5e-4: 79%, 78%, 68% on seeds 0-2, spread 0.21-0.23.
    # cgan+wgan followed its labels 44-64% of the time (seeds 0-2) at cgan's own aux_weight; its
    # pair defaults (conf/model_loss/cgan_wgan.yaml) double it: 80-85%, within-label spread 0.14-0.19.
    assert varied, f"within-label spread {np.round(spreads, 3)}"
    assert formed, {k: m[k] for k in ("label_tv", "label_acc") if k in m}
