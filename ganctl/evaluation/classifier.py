"""The feature extractor behind `ganctl eval`: a small CNN classifier trained on the dataset's own
training split. Inception features fit 28x28 digits badly and its weights cannot be downloaded
offline, so FID, KID, IS, precision/recall and label accuracy use this network instead: its
penultimate layer (128 features) and its class probabilities.

The classifier and the real data's features are cached under `cache_dir()` (env GANCTL_CACHE,
default ~/.cache/ganctl), keyed by a fingerprint of the data and of the preprocessing, so a
changed dataset never meets a stale classifier.

    clf = load_or_fit(reference, device)        # fits once, then reads the cache
    feats, logits = clf.embed(images_uint8)     # (N, 128), (N, K)
"""
import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ganctl.run.checkpoint import save_checkpoint
from ganctl.data import to_float
from ganctl.errors import UserError

log = logging.getLogger(__name__)

# Bump when the network, its training recipe or the preprocessing changes: old caches then miss.
VERSION = "cnn128-v2"
NUM_FEATURES = 128


def cache_dir() -> Path:
    return Path(os.environ.get("GANCTL_CACHE", "~/.cache/ganctl")).expanduser()


class FeatureClassifier(nn.Module):
    """Three conv layers (BatchNorm, ReLU; max-pool between them), a 3x3 adaptive pool, then
    128 features and a linear head. Any square input size; `features()` is what the metrics compare."""

    num_features = NUM_FEATURES

    def __init__(self, img_channels: int, num_classes: int):
        super().__init__()

        def block(c_in, c_out):
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(  # about 2M multiply-adds a 28x28 image: cheap to fit on a CPU
            *block(img_channels, 16), nn.MaxPool2d(2),
            *block(16, 32), nn.MaxPool2d(2),
            *block(32, 64), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
            nn.Linear(64 * 9, NUM_FEATURES), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(NUM_FEATURES, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, C, H, W) on any device -> features (N, 128) and logits (N, K), float32."""
        device = next(self.parameters()).device
        feats, logits = [], []
        for i in range(0, len(images), batch_size):
            h = self.body(to_float(images[i:i + batch_size].to(device)))
            feats.append(h.float())
            logits.append(self.head(h).float())
        return torch.cat(feats), torch.cat(logits)


@dataclass
class Reference:
    """A dataset's labelled images for the classifier: train and held-out test, uint8 on the CPU."""
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    @cached_property
    def test_key(self) -> str:
        """A fingerprint of the test split alone (every pixel and label), plus VERSION: what a shipped
        classifier is matched by, since a dataset's published test split is the same for every user."""
        h = hashlib.sha256(VERSION.encode())
        for t in (self.test_x, self.test_y):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    @cached_property
    def key(self) -> str:
        """Dataset name, shape and a fingerprint of the pixels and labels, plus VERSION."""
        h = hashlib.sha1(VERSION.encode())
        for t in (self.train_x, self.train_y, self.test_x, self.test_y):
            stride = max(1, len(t) // 2000)  # ~2000 evenly spaced items: cheap, and sees any change
            h.update(str(tuple(t.shape)).encode())
            h.update(t[::stride].contiguous().numpy().tobytes())
        c, s = self.train_x.shape[1], self.train_x.shape[2]
        return f"{self.name}-{c}x{s}x{s}-{h.hexdigest()[:12]}"


def reference_from(name: str, train, test=None) -> Reference:
    """The labelled real images the classifier learns from: a dataset's train and test splits, or,
    without a test split (an image folder), a fixed 10% of its images held out."""
    if test is not None:
        return Reference(name, train.images, train.labels, test.images, test.labels, train.num_classes)
    x, y = train.arrays()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_test = max(1, len(x) // 10)
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    return Reference(name, x[train_idx], y[train_idx], x[test_idx], y[test_idx], train.num_classes)


def accuracy(clf: FeatureClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    clf.eval()
    _, logits = clf.embed(x)
    return (logits.argmax(1).cpu() == y).float().mean().item()


def fit(ref: Reference, device, epochs: int = 3, batch_size: int = 128, lr: float = 2e-3,
        seed: int = 0, min_steps: int = 100) -> tuple[FeatureClassifier, float]:
    """Adam with a one-cycle schedule; returns the network and its accuracy on the held-out
    test images."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # init and dropout; callers that train a GAN fork the RNG around this
    clf = FeatureClassifier(ref.train_x.shape[1], ref.num_classes).to(device)
    x_all, y_all = ref.train_x.to(device), ref.train_y.to(device)
    batch_size = min(batch_size, len(x_all))
    per_epoch = len(x_all) // batch_size
    total = max(epochs * per_epoch, min_steps)  # a small dataset still gets enough steps
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total)
    clf.train()
    from tqdm import tqdm
    for step in tqdm(range(total), desc="fit classifier", unit="step", leave=False,
                     disable=not sys.stderr.isatty()):
        if step % per_epoch == 0:
            perm = torch.randperm(len(x_all), generator=g).to(device)
        i = step % per_epoch
        idx = perm[i * batch_size:(i + 1) * batch_size]
        loss = F.cross_entropy(clf(to_float(x_all[idx])), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return clf.eval(), accuracy(clf, ref.test_x, ref.test_y)


def classifier_path(ref: Reference) -> Path:
    return cache_dir() / "classifiers" / f"{ref.key}.pt"


# Classifiers that ship inside the package (benchmarks/ship_classifier.py writes them and prints
# their entries), so that a first MNIST or Fashion-MNIST run fits nothing and every user's FIDs come from the same
# network. Each is matched by its dataset's test split (MNIST's t10k is the published file
# everywhere) and checked by the SHA-256 of its file.
SHIPPED_DIR = Path(__file__).parent / "classifiers"
SHIPPED = {
    "mnist": {"file": "mnist.pt", "test_key": "5496f115dac9983f",
              "sha256": "d49639ac570f7477ba0a1a69dcb744a083c56f7bfc6a115260882adadd8b08b5", "test_acc": 0.9913},
    "fashion_mnist": {"file": "fashion_mnist.pt", "test_key": "90f8bb67317a6e38",
                      "sha256": "4065bde8fd75ee2747863b6437e24f7d84ce126941c72a03e582779f4d4b37d6", "test_acc": 0.9050},
}


def shipped_classifier(ref: Reference) -> tuple[FeatureClassifier, float, str] | None:
    """The shipped classifier for `ref`'s test split, its test accuracy and file; None where none ships."""
    for entry in SHIPPED.values():
        path = SHIPPED_DIR / entry["file"]
        if entry["test_key"] != ref.test_key or not path.is_file():
            continue
        if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            log.warning("shipped classifier %s does not match its SHA-256; not using it", path)
            return None
        clf = FeatureClassifier(ref.train_x.shape[1], ref.num_classes)
        clf.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["weights"])
        return clf.eval(), entry["test_acc"], str(path)
    return None


def weights_tag(clf: FeatureClassifier) -> str:
    """A short fingerprint of a classifier's weights: the real features it computed are cached under
    it, so features never outlive the network that made them."""
    h = hashlib.sha256()
    for v in clf.state_dict().values():
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:8]


def load_or_fit(ref: Reference, device, refit: bool = False, **fit_kwargs) -> tuple[FeatureClassifier, float]:
    """The classifier for `ref` and its test accuracy: the one cached by `ganctl fit-classifier`,
    else the one that ships for this dataset, else one fitted now (with a progress bar) and cached."""
    if ref.num_classes < 2:
        raise UserError(f"dataset {ref.name} has one class, so no classifier can be trained for its "
                        f"features; use eval.backbone=inception")
    path = classifier_path(ref)
    if path.is_file() and not refit:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            clf = FeatureClassifier(ref.train_x.shape[1], ref.num_classes)
            clf.load_state_dict(state["weights"])
            return clf.to(device).eval(), state["test_acc"]
        except Exception as e:  # a torn or foreign file: fit again rather than fail
            log.warning("cached classifier %s is unreadable (%s); fitting a new one", path,
                        str(e).splitlines()[0] if str(e) else type(e).__name__)
    shipped = None if refit else shipped_classifier(ref)
    if shipped:
        clf, acc, _ = shipped
        return clf.to(device), acc
    log.info("fitting the feature classifier for %s on %d images, once (a few minutes on a CPU for "
             "60,000 images; cached in %s)", ref.name, len(ref.train_x), path.parent)
    clf, acc = fit(ref, device, **fit_kwargs)
    save_checkpoint({"weights": clf.state_dict(), "test_acc": acc, "key": ref.key,
                     "num_classes": ref.num_classes}, path)
    log.info("feature classifier: %.2f%% on %d held-out test images", 100 * acc, len(ref.test_x))
    return clf, acc


def reference_data(dataset_cfg):
    """The labelled real images of a dataset config for the feature classifier and the real
    features (`ganctl eval`, quick evals): its train and test splits where it has them, whole
    (a run on `dataset.limit` images is judged against the full data, as Karras et al. 2020 do)."""
    from ganctl.config.build import build
    name = dataset_cfg._target_.rsplit(".", 1)[-1].removeprefix("load_")
    if "split" in dataset_cfg:
        return reference_from(name, build(dataset_cfg, "dataset", split="train", device="cpu", limit=None),
                              build(dataset_cfg, "dataset", split="test", device="cpu", limit=None))
    return reference_from(name, build(dataset_cfg, "dataset", device="cpu", limit=None))
