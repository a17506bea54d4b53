"""Shared fixtures: tiny datasets written in the real on-disk formats, and the real config
composed with Hydra's compose API, then shrunk (CPU, tiny nets, two steps)."""
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from PIL import Image

from ganctl import config

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
}


def options(group: str) -> list[str]:
    """Every option of a config group: the YAML files in conf/<group>/."""
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


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


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A root holding tiny MNIST and Fashion-MNIST in torchvision's raw IDX layout."""
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, "MNIST")
    write_mnist(root, "FashionMNIST")
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


@pytest.fixture()
def make_cfg(data_root):
    """make_cfg(*overrides) -> the composed, shrunk training config."""
    config.register()

    def make(*overrides: str):
        over = list(overrides)
        choice = {o.split("=")[0]: o.split("=", 1)[1] for o in over if "." not in o.split("=")[0]}
        data = [] if choice.get("dataset") == "folder" else [f"dataset.root={data_root}", "dataset.download=false"]
        with initialize_config_module("ganctl.conf", version_base="1.3"):
            return compose("train", overrides=[*SHRINK, *TINY_MODEL.get(choice.get("model", "dcgan"), []),
                                               *data, *over])
    return make


def run_ganctl(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300):
    """Run the installed `ganctl` command as a user types it."""
    exe = Path(sys.executable).parent / "ganctl"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ganctl"]
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([*cmd, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


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
