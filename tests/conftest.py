"""Shared fixtures: tiny datasets written in the real on-disk formats, and the real config
composed with Hydra's compose API, then shrunk (CPU, tiny nets, two steps)."""
import copy
import logging
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
import yaml
from PIL import Image

from ganctl.cli import registry
from ganctl.training.loop import train

REPO = Path(__file__).resolve().parents[1]
GROUPS = ("model", "loss", "dataset", "optimizer", "trainer")
SHRINK = [
    "trainer.device=cpu", "trainer.batch_size=16", "trainer.max_steps=2", "trainer.progress=false",
    "trainer.log_every=1", "trainer.sample_every=2", "trainer.ckpt_every=2", "trainer.eval_every=null",
]
# Small widths per model family so that every test trains in well under a second.
TINY_MODEL = {
    "gan": ["model.G.hidden=[32,64]", "model.D.hidden=[64,32]"],
    "cgan": ["model.G.hidden=[32,64]", "model.D.hidden=[64,32]"],
    "dcgan": ["model.G.ngf=8", "model.D.ndf=8"],
    "cdcgan": ["model.G.ngf=8", "model.D.ndf=8"],
    "resnet": ["model.G.ch=4", "model.D.ch=4"],
}


def load_script(name: str):
    """benchmarks/<name>.py as a module (the benchmarks are scripts, not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mnist_models() -> list[str]:
    """The models that take MNIST's 28 px (model=resnet takes 32, 64 and 128 px: its own tests)."""
    return [m for m in options("model") if m != "resnet"]


def options(group: str) -> list[str]:
    """Every option of a config group: the YAML files in conf/<group>/."""
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


def dataset_cfg(root, name: str = "mnist"):
    """The dataset config of torchvision's `name` (mnist, fashion_mnist, cifar10) under `root`, its
    training split, nothing downloaded: what reference_data and the Evaluator take."""
    from omegaconf import OmegaConf
    return OmegaConf.create({"_target_": f"ganctl.data.load_{name}", "root": str(root), "download": False,
                             "split": "train"})


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX format: magic (0, 0, type 0x08 = ubyte, ndim), big-endian int32 dims, then the bytes."""
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def tiny_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 images where class k is a bright horizontal bar at row 2 + 2k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 40, size=(n, 28, 28))
    for i, k in enumerate(labels):
        images[i, 2 + 2 * k:4 + 2 * k, 4:24] = 255
    return images.astype(np.uint8), labels.astype(np.uint8)


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 64, n_test: int = 32) -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = tiny_digits(n, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def tiny_cifar(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, 32, 32) uint8 in CIFAR's channel-first order: class k is a bright square in
    channel k % 3 at a place of its own, plus noise. The labels go on where the last seed's
    stopped, so that the training batches together hold every class, as CIFAR-10's do."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) + seed * n) % 10
    images = rng.integers(0, 40, size=(n, 3, 32, 32))
    for i, k in enumerate(labels):
        images[i, k % 3, 3 * k:3 * k + 6, 4:10] = 255
    return images.astype(np.uint8), labels


def write_cifar10(root: Path, per_batch: int = 8, n_test: int = 16) -> dict:
    """CIFAR-10's python version (root/cifar-10-batches-py): five training batches, a test batch
    and batches.meta, pickled dicts with "data" (N, 3072) and "labels", as published. Returns
    {"train": (images, labels), "test": ...} as written. The files cannot match the published
    MD5 sums that torchvision checks; tests that read them patch that check."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    written = {"train": [], "test": []}
    names = [(f"data_batch_{i}", "train", per_batch) for i in range(1, 6)] + [("test_batch", "test", n_test)]
    for seed, (name, split, n) in enumerate(names):
        images, labels = tiny_cifar(n, seed)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": images.reshape(n, -1), "labels": labels.tolist()}, f)
        written[split].append((images, labels))
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                     "horse", "ship", "truck"]}, f)
    return {split: tuple(np.concatenate(parts) for parts in zip(*batches)) for split, batches in written.items()}


@pytest.fixture()
def cifar_files_pass_their_checksums(monkeypatch):
    """Let torchvision read the tiny CIFAR-10 files: their MD5 sums cannot be the published ones."""
    import torchvision.datasets.cifar
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))


@pytest.fixture()
def short_classifier_fit(monkeypatch):
    """short_classifier_fit(steps): feature classifiers fitted in this test take `steps` steps
    instead of at least 100, for tests of what is done with a fit rather than of how well it learns."""
    import functools

    from ganctl.evaluation import classifier

    def set_steps(steps: int):
        monkeypatch.setattr(classifier, "fit", functools.partial(classifier.fit, min_steps=steps))
    return set_steps


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A root holding tiny MNIST and Fashion-MNIST in torchvision's raw IDX layout, and a tiny
    CIFAR-10 in its python layout."""
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, "MNIST")
    write_mnist(root, "FashionMNIST")
    write_cifar10(root)
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """Two classes of 12 small RGB PNGs each, in class subfolders."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for k, name in enumerate(["cats", "dogs"]):
        (root / name).mkdir()
        for i in range(12):
            pixels = rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(autouse=True, scope="session")
def _tiny_classifiers(data_root, _private_cache):
    """The feature classifiers of the tiny MNIST and Fashion-MNIST, fitted once for the session
    in 10 steps (enough for ten bars): the tests that evaluate on them check what is done with a
    classifier; how well the shipped 100-step fit learns is tested on 600 images (test_eval)."""
    from ganctl.evaluation.classifier import reference_data
    from ganctl.evaluation.classifier import load_or_fit
    for name in ("mnist", "fashion_mnist"):
        load_or_fit(reference_data(dataset_cfg(data_root, name)), "cpu", min_steps=10)


_COMPOSED = {}  # overrides -> config: the suite composes the same configs many times, 0.15-0.3 s each


@pytest.fixture()
def make_cfg(data_root):
    """make_cfg(*overrides) -> the composed, shrunk training config (a copy of its own: a test may
    change it)."""
    registry.register()

    def make(*overrides: str):
        over = list(overrides)
        choice = {o.split("=")[0]: o.split("=", 1)[1] for o in over if "." not in o.split("=")[0]}
        data = [] if choice.get("dataset") == "folder" else [f"dataset.root={data_root}", "dataset.download=false"]
        full = (*SHRINK, *TINY_MODEL.get(choice.get("model", "dcgan"), []), *data, *over)
        if full not in _COMPOSED:
            with initialize_config_module("ganctl.conf", version_base="1.3"):
                _COMPOSED[full] = compose("train", overrides=list(full))
        return copy.deepcopy(_COMPOSED[full])
    return make


def run_ganctl(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300, process: bool = False):
    """`ganctl *args` in `cwd` -> CompletedProcess(returncode, stdout, stderr). In this process
    (cli.main, no interpreter start-up) unless `process=True`: the installed console script in a
    process of its own, for what needs the boundary (signals, the entry point, launchers)."""
    if not process:
        return _in_process(list(args), cwd, env or {})
    exe = Path(sys.executable).parent / "ganctl"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ganctl"]
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([*cmd, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def _in_process(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """cli.main(args) with the working directory, environment, argv, streams and logging of a
    fresh process, all restored afterwards."""
    import contextlib
    import io
    import warnings

    from ganctl.cli.main import main
    saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv, os.getcwd()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out, err = io.StringIO(), io.StringIO()
    os.environ.update({k: str(v) for k, v in env.items()})
    sys.argv = ["ganctl"]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                main(args)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        for h in root.handlers[:]:  # Hydra configured logging for the job: its handlers hold the streams
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        root.setLevel(level)
    return subprocess.CompletedProcess(["ganctl", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Classifiers and real features go to a cache of this test session (subprocesses inherit
    the variable), never to the user's ~/.cache/ganctl."""
    old = os.environ.get("GANCTL_CACHE")
    os.environ["GANCTL_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("GANCTL_CACHE", None)
    else:
        os.environ["GANCTL_CACHE"] = old


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def _tiny_run_once(data_root, tmp_path_factory) -> Path:
    """The tiny run, trained once per test session (tiny_run hands out copies)."""
    registry.register()
    with initialize_config_module("ganctl.conf", version_base="1.3"):
        overrides = [*SHRINK, *TINY_MODEL["dcgan"], f"dataset.root={data_root}", "dataset.download=false"]
        cfg = compose("train", overrides=overrides)
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    train(cfg, run_dir)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return run_dir


@pytest.fixture()
def tiny_run(_tiny_run_once, tmp_path) -> Path:
    """A finished tiny dcgan run (two steps) with the .hydra/overrides.yaml a CLI run has: a copy
    of one trained once per session, so a test may change it."""
    import shutil
    return Path(shutil.copytree(_tiny_run_once, tmp_path / "run"))


@pytest.fixture()
def ganctl():
    """ganctl(*args, cwd=dir, env=None) -> (exit code, stdout, stderr), in this process."""
    def run(*args: str, cwd: Path, env: dict | None = None):
        result = _in_process(list(args), cwd, env or {})
        return result.returncode, result.stdout, result.stderr
    return run


def one_line_error(code: int, err: str, *fragments: str) -> str:
    """Assert a refusal: a non-zero exit and one line on stderr holding every fragment; the line."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("ganctl: error:"), (code, err)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
