"""Training sets with one interface: `img_channels`, `img_size`, `num_classes`, `len()` and
`epoch(e, batch_size)`, which yields (x, y) on the training device, x in [-1, 1] (B, C, H, W),
y int64 (B,). Each epoch's order comes from a generator seeded with (seed, epoch), so a run can
resume mid-epoch, and DDP ranks split each global batch of the same permutation.

    data = load_mnist(root="data", download=False, split="train", device="cuda")
    for x, y in data.epoch(0, batch_size=128): ...

Datasets that fit in memory (MNIST, Fashion-MNIST, CIFAR-10) are one uint8 tensor on the device, indexed
and normalised there: no DataLoader workers and no per-sample Python on the hot path.
"""
import logging
import multiprocessing
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ganctl.errors import UserError, one_line
from ganctl.training.memory import refuse_if_too_large

log = logging.getLogger(__name__)

MAX_IMG_SIZE = 1024  # the largest side any of ganctl's models is built for (StyleGAN's largest)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float in [-1, 1], the range the networks see and G draws in."""
    return images.float().mul_(2.0 / 255.0).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float in [-1, 1] (a generator's output, clamped) -> uint8, as images are written."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def epoch_permutation(n: int, seed: int, epoch: int, device="cpu") -> torch.Tensor:
    g = torch.Generator(device=device)
    g.manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g, device=device)


def rank_batches(perm: torch.Tensor, batch_size: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's (batches, batch_size) indices: global batch i is perm[i*B*W:(i+1)*B*W] and
    rank r takes its r-th block of B, so W ranks at batch B see exactly the batches one process
    sees at batch B*W (the last partial global batch dropped)."""
    per_epoch = len(perm) // (batch_size * world_size)
    return perm[:per_epoch * batch_size * world_size].view(per_epoch, world_size, batch_size)[:, rank]


def balanced_subset(labels: torch.Tensor, limit: int, num_classes: int) -> torch.Tensor:
    """Indices (sorted) of `limit` images, as evenly spread over the classes as they allow, drawn
    with a fixed seed: the same subset for every trainer.seed, so seeds vary training, not data."""
    if limit >= len(labels):
        return torch.arange(len(labels))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    by_class = [order[labels[order] == k] for k in range(num_classes)]
    quota = [0] * num_classes
    left = limit
    while left:  # a round each: a class with fewer images than its share gives the rest to others
        open_ = [k for k in range(num_classes) if quota[k] < len(by_class[k])]
        share, extra = divmod(left, len(open_))
        for i, k in enumerate(open_):
            take = min(share + (i < extra), len(by_class[k]) - quota[k])
            quota[k] += take
            left -= take
    return torch.cat([idx[:q] for idx, q in zip(by_class, quota)]).sort().values


class InMemoryImages:
    """uint8 images (N, C, H, W) and int64 labels (N,), both on `device`; class_names: what each
    label stands for (a folder's subfolders), where known."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 device="cpu", seed: int = 0, rank: int = 0, world_size: int = 1, class_names=None):
        self.images = images.to(device)
        self.labels = labels.to(device=device, dtype=torch.int64)
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
        self.img_channels, self.img_size = images.shape[1], images.shape[2]
        self.device, self.seed, self.rank, self.world_size = torch.device(device), seed, rank, world_size

    def __len__(self) -> int:
        return self.images.shape[0]

    def batches_per_epoch(self, batch_size: int) -> int:
        return len(self) // (batch_size * self.world_size)

    def arrays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image as uint8 (N, C, H, W) and the labels (N,), on the CPU."""
        return self.images.cpu(), self.labels.cpu()

    def class_sizes(self) -> list[int]:
        return torch.bincount(self.labels.cpu(), minlength=self.num_classes).tolist()

    def epoch(self, epoch: int, batch_size: int, start: int = 0):
        """Batches of one epoch (the last partial one dropped), from batch index `start`."""
        perm = epoch_permutation(len(self), self.seed, epoch, self.device)
        for idx in rank_batches(perm, batch_size, self.rank, self.world_size)[start:]:
            yield to_float(self.images[idx]), self.labels[idx]  # x (B, C, H, W) in [-1, 1]


def _torchvision_images(cls, layout: str, root: str, download: bool, split: str, limit: int | None,
                       **placement) -> InMemoryImages:
    """A torchvision dataset whose files lie under root as `layout` says (torchvision's own
    layout, e.g. MNIST/raw/*-ubyte), as InMemoryImages; `limit`: at most that many images, a
    class-balanced subset; `placement`: device, seed, rank, world_size."""
    root = os.path.abspath(os.path.expanduser(root))
    splits = {"train": [True], "test": [False], "all": [True, False]}[split]
    where = os.path.join(root, os.path.dirname(layout))
    state = "incomplete or corrupted" if os.path.isdir(where) else "not found"  # before a download makes it
    made = [d for d in (where, os.path.dirname(where), root) if not os.path.isdir(d)]  # deepest first
    try:
        parts = [cls(root, train=train, download=download) for train in splits]
    except (RuntimeError, OSError) as e:
        for d in made:  # a failed download leaves no empty folders behind
            if os.path.isdir(d) and not os.listdir(d):
                os.rmdir(d)
        why = (f"and could not be downloaded ({one_line(e)})" if download
               else "(dataset.download=false)")
        raise UserError(
            f"{cls.__name__} {state} in {where} {why}; "
            f"point the tool at a folder holding {layout} with "
            f"GANCTL_DATA=<dir> or dataset.root=<dir>") from None
    except Exception as e:  # a zero-byte file, a wrong magic number, a truncated array
        raise UserError(f"{cls.__name__} files in {where} are not valid ({type(e).__name__}: {one_line(e)}); "
                        f"replace them with the published {layout}") from None
    images = torch.cat([_nchw(p.data) for p in parts])
    labels = torch.cat([torch.as_tensor(p.targets, dtype=torch.int64) for p in parts])
    check_labels(images, labels, len(parts[0].classes), where)
    if limit is not None:
        keep = balanced_subset(labels, limit, len(parts[0].classes))
        images, labels = images[keep], labels[keep]
    return InMemoryImages(images, labels, len(parts[0].classes), **placement, class_names=parts[0].classes)


def check_labels(images: torch.Tensor, labels: torch.Tensor, num_classes: int, where) -> None:
    """One label per image, each a class: checked once at load, not found as an index error mid-run."""
    if len(images) != len(labels):
        raise UserError(f"the dataset in {where} has {len(images)} images but {len(labels)} labels")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise UserError(f"the dataset in {where} has {len(bad)} labels outside its classes "
                        f"0..{num_classes - 1} (first: {bad[0].item()})")


def _nchw(data) -> torch.Tensor:
    """torchvision's arrays as uint8 (N, C, H, W): MNIST's tensor (N, H, W), CIFAR's NumPy (N, H, W, C)."""
    data = torch.as_tensor(data)
    return data[:, None] if data.ndim == 3 else data.permute(0, 3, 1, 2).contiguous()


def load_mnist(root: str, download: bool, split: str, limit: int | None = None, device="cpu",
               seed: int = 0, rank: int = 0, world_size: int = 1) -> InMemoryImages:
    """MNIST digits from root/MNIST/raw (torchvision's layout)."""
    from torchvision.datasets import MNIST
    return _torchvision_images(MNIST, "MNIST/raw/*-ubyte", root, download, split, limit,
                               device=device, seed=seed, rank=rank, world_size=world_size)


def load_fashion_mnist(root: str, download: bool, split: str, limit: int | None = None,
                       device="cpu", seed: int = 0, rank: int = 0,
                       world_size: int = 1) -> InMemoryImages:
    """Fashion-MNIST from root/FashionMNIST/raw (torchvision's layout)."""
    from torchvision.datasets import FashionMNIST
    return _torchvision_images(FashionMNIST, "FashionMNIST/raw/*-ubyte", root, download, split, limit,
                               device=device, seed=seed, rank=rank, world_size=world_size)


def load_cifar10(root: str, download: bool, split: str, limit: int | None = None, device="cpu",
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> InMemoryImages:
    """CIFAR-10 (32x32 RGB, 10 classes) from root/cifar-10-batches-py, the python version that
    torchvision downloads; its files are checked against their published MD5 sums."""
    from torchvision.datasets import CIFAR10
    return _torchvision_images(CIFAR10, "cifar-10-batches-py/*_batch*", root, download, split, limit,
                               device=device, seed=seed, rank=rank, world_size=world_size)


class OutOfRange(ValueError):
    """An image whose values have no 8-bit reading (a float image outside [0, 1])."""


# PIL's modes of more than 8 bits per value and the range each spans: convert() would clip 16-bit
# values at 255 (a white image) and truncate floats in [0, 1] to 0 (a black one).
WIDE_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}


def eight_bit(img):
    """A 16-bit or 32-bit grey image (I;16, I) scaled from [0, 65535] to 8 bits, a float one (F)
    from [0, 1]; any other image as it is. Values outside that range raise OutOfRange."""
    if img.mode not in WIDE_MODES:
        return img
    import numpy as np
    from PIL import Image
    top = WIDE_MODES[img.mode]
    values = np.asarray(img, dtype=np.float64)
    if not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= top):
        raise OutOfRange(f"{img.mode} values in [{values.min():.4g}, {values.max():.4g}], outside [0, {top:g}]")
    return Image.fromarray(np.round(values * (255 / top)).astype(np.uint8), "L")


def _image_problem(path: Path) -> str | None:
    """Why `path` cannot be trained on, or None. PIL decodes the whole file (a truncated JPEG
    passes verify(), which reads only its structure)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            img.load()
            eight_bit(img)
        return None
    except OutOfRange as e:
        return str(e)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError):
        return "undecodable"


class _ImageFiles(Dataset):
    def __init__(self, files, labels, mode, transform):
        self.files, self.labels, self.mode, self.transform = files, labels, mode, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image, ImageOps
        with Image.open(self.files[i]) as img:  # upright, as a viewer shows a phone's photo (EXIF orientation)
            return self.transform(eight_bit(ImageOps.exif_transpose(img)).convert(self.mode)), self.labels[i]


def folder_classes(root: Path) -> list[str]:
    """The class subfolders of an image folder, sorted (none: one class, the images in root).
    Hidden folders (.git, .ipynb_checkpoints) are not classes."""
    if not root.is_dir():
        raise UserError(f"dataset.root {root} is not a folder")
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _visible(path: Path, root: Path) -> bool:
    """Whether no part of `path` below `root` is hidden: a notebook's .ipynb_checkpoints copies and
    macOS's ._ files are not training images."""
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


class FolderImages:
    """Images under root/<class>/ (or directly under root: one class), resized and
    center-cropped to img_size, read by a DataLoader."""

    def __init__(self, root: str, img_size: int, channels: int, num_workers: int,
                 limit: int | None = None, device="cpu", seed: int = 0, rank: int = 0, world_size: int = 1):
        from torchvision import transforms as T
        root_path = Path(root).expanduser().resolve()
        classes = folder_classes(root_path)
        files, labels = [], []
        for k, name in enumerate(classes or [""]):
            found = sorted(p for p in (root_path / name).rglob("*")  # regular files: a FIFO would hang
                           if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and _visible(p, root_path))
            files += found
            labels += [k] * len(found)
        if not files:
            raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root_path}")
        problems = [_image_problem(f) for f in files]
        wide = [(f, why) for f, why in zip(files, problems) if why not in (None, "undecodable")]
        if wide:  # never trained on as white or black squares
            raise UserError(f"{len(wide)} of {len(files)} images under {root_path} have values that do not read "
                            f"as 8-bit (first: {wide[0][0]}: {wide[0][1]}); convert them to 8-bit images")
        bad = [f for f, why in zip(files, problems) if why]
        if len(bad) == len(files):  # found now, not as a traceback from a DataLoader worker mid-epoch
            raise UserError(f"none of the {len(files)} image files under {root_path} can be decoded "
                            f"(first: {bad[0]})")
        if bad:
            log.warning("skipping %d of %d image files under %s that cannot be decoded (first: %s)",
                        len(bad), len(files), root_path, bad[0])
            kept = [why is None for why in problems]
            files, labels = [f for f, ok in zip(files, kept) if ok], [k for k, ok in zip(labels, kept) if ok]
        self.num_classes = max(len(classes), 1)
        self.class_names = classes or [root_path.name]
        if limit is not None:
            keep = balanced_subset(torch.tensor(labels), limit, self.num_classes).tolist()
            files, labels = [files[i] for i in keep], [labels[i] for i in keep]
        self.img_channels, self.img_size = channels, img_size
        self.dataset = _ImageFiles(files, labels, "L" if channels == 1 else "RGB", T.Compose([
            T.Resize(img_size), T.CenterCrop(img_size),
            T.ToTensor(), T.Normalize([0.5] * channels, [0.5] * channels)]))
        self.num_workers = num_workers
        self.device, self.seed, self.rank, self.world_size = torch.device(device), seed, rank, world_size

    def __len__(self) -> int:
        return len(self.dataset)

    def arrays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image, in file order, as uint8 (N, C, H, W) on the CPU, and the labels (N,)."""
        loader = DataLoader(self.dataset, batch_size=256, **self._workers())
        xs, ys = [], []
        for x, y in loader:
            xs.append(to_uint8(x))
            ys.append(y.to(torch.int64))
        return torch.cat(xs), torch.cat(ys)

    def batches_per_epoch(self, batch_size: int) -> int:
        return len(self) // (batch_size * self.world_size)

    def class_sizes(self) -> list[int]:
        return torch.bincount(torch.tensor(self.dataset.labels, dtype=torch.int64), minlength=self.num_classes).tolist()

    def _workers(self) -> dict:
        """DataLoader worker settings with the start method named: inside a sweep job of Hydra's
        joblib launcher the process-wide default is loky's own, which DataLoader cannot start."""
        if self.num_workers == 0:
            return {"num_workers": 0}
        method = "fork" if sys.platform == "linux" else "spawn"
        return {"num_workers": self.num_workers, "multiprocessing_context": multiprocessing.get_context(method)}

    def epoch(self, epoch: int, batch_size: int, start: int = 0):
        perm = epoch_permutation(len(self), self.seed, epoch)
        mine = rank_batches(perm, batch_size, self.rank, self.world_size)[start:]
        loader = DataLoader(self.dataset, batch_size=batch_size, sampler=mine.reshape(-1).tolist(),
                            **self._workers(), pin_memory=self.device.type == "cuda",
                            drop_last=True)
        for x, y in loader:
            yield (x.to(self.device, non_blocking=True),
                   y.to(self.device, dtype=torch.int64, non_blocking=True))


def load_folder(root: str, img_size: int, channels: int, num_workers: int, cache: bool, limit: int | None = None,
                device="cpu", seed: int = 0, rank: int = 0, world_size: int = 1) -> FolderImages | InMemoryImages:
    """Any image folder (see FolderImages). cache: every image decoded, resized and cropped once,
    then held on `device` as uint8 like MNIST (an epoch decodes nothing); else decoded again each
    epoch by DataLoader workers (a folder too large for memory)."""
    folder = FolderImages(root, img_size, channels, num_workers, limit, device, seed, rank, world_size)
    if not cache:
        return folder
    refuse_if_too_large(f"dataset.cache=true ({len(folder)} images of {channels}x{img_size}x{img_size})",
                        len(folder) * channels * img_size ** 2, device,
                        "use dataset.cache=false (decoded every epoch) or a smaller dataset.img_size")
    t0 = time.perf_counter()
    images, labels = folder.arrays()
    seconds = time.perf_counter() - t0
    log.info("decoded %d images of %s once in %.1f s (%.0f img/s); held as %.0f MB of uint8", len(images),
             Path(root).expanduser(), seconds, len(images) / seconds, images.numel() / 1e6)
    return InMemoryImages(images, labels, folder.num_classes, device, seed, rank, world_size, folder.class_names)


# What each torchvision dataset holds (channels, size, classes): nets can be built for it without
# reading a file (`ganctl summary`).
SHAPES = {load_mnist: (1, 28, 10), load_fashion_mnist: (1, 28, 10), load_cifar10: (3, 32, 10)}


def shape(loader, settings: dict) -> dict:
    """The data_info (img_channels, img_size, num_classes) that `loader` with `settings` would give,
    without decoding an image: a folder's classes are its subfolders."""
    if loader is load_folder:
        classes = folder_classes(Path(settings["root"]).expanduser().resolve())
        return {"img_channels": settings["channels"], "img_size": settings["img_size"],
                "num_classes": max(len(classes), 1)}
    channels, size, classes = SHAPES[loader]
    return {"img_channels": channels, "img_size": size, "num_classes": classes}
