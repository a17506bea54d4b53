"""The in-memory datasets: on-device batches, epoch permutations, shards, splits, clear errors."""
import os

import pytest
import torch

from conftest import tiny_digits, write_cifar10
from ganctl.data import (InMemoryImages, _ImageFiles, balanced_subset, load_cifar10, load_fashion_mnist,
                         load_folder, load_mnist)
from ganctl.errors import UserError


def indices_of(data, epoch, batch_size, start=0):
    """Recover which samples a batch holds: images here are unique per index."""
    return [int(x[:, 0, 0, 0].round()) for x, _ in data.epoch(epoch, batch_size, start)]


def numbered(n: int, **kwargs) -> InMemoryImages:
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 1, 4, 4).contiguous()
    return InMemoryImages(images, torch.arange(n) % 3, 3, **kwargs)


def test_batches_are_normalised_and_cover_each_epoch_once():
    data = numbered(40)
    seen = []
    for x, y in data.epoch(0, batch_size=8):
        assert x.shape == (8, 1, 4, 4) and x.dtype == torch.float32
        seen += ((x[:, 0, 0, 0] + 1) * 127.5).round().long().tolist()
        assert torch.equal(y, torch.tensor(seen[-8:]) % 3)  # labels travel with their images
    assert sorted(seen) == list(range(40))


def test_epoch_order_is_seeded_and_differs_between_epochs():
    order = lambda d, e: [x[:, 0, 0, 0].tolist() for x, _ in d.epoch(e, 8)]
    a, b = numbered(40, seed=1), numbered(40, seed=1)
    assert order(a, 0) == order(b, 0)
    assert order(a, 0) != order(a, 1)
    assert order(a, 0) != order(numbered(40, seed=2), 0)


def test_resuming_mid_epoch_gives_the_remaining_batches():
    data = numbered(40)
    full = [x for x, _ in data.epoch(3, 8)]
    rest = [x for x, _ in data.epoch(3, 8, start=2)]
    assert len(rest) == 3 and all(torch.equal(a, b) for a, b in zip(full[2:], rest))


def test_ranks_split_each_global_batch_of_one_process():
    """Two ranks at batch 4 see, batch by batch, what one process sees at batch 8: the premise of
    DDP at per-rank batch b matching one process at batch 2b."""
    ranks = [numbered(40, rank=r, world_size=2) for r in range(2)]
    single = [x[:, 0, 0, 0].tolist() for x, _ in numbered(40).epoch(0, 8)]
    per_rank = [[x[:, 0, 0, 0].tolist() for x, _ in d.epoch(0, 4)] for d in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == 5
    assert [a + b for a, b in zip(*per_rank)] == single  # disjoint halves of the same batches
    resumed = [x[:, 0, 0, 0].tolist() for x, _ in ranks[1].epoch(0, 4, start=3)]
    assert resumed == per_rank[1][3:]


def test_mnist_splits(data_root):
    train, test = load_mnist(str(data_root), False, "train"), load_mnist(str(data_root), False, "test")
    both = load_mnist(str(data_root), False, "all")
    assert (len(train), len(test), len(both)) == (64, 32, 96)
    assert (train.img_channels, train.img_size, train.num_classes) == (1, 28, 10)
    images, labels = tiny_digits(64, seed=0)
    assert torch.equal(train.images[:, 0], torch.from_numpy(images))  # read back byte for byte
    assert torch.equal(train.labels, torch.from_numpy(labels).long())
    assert len(load_fashion_mnist(str(data_root), False, "train")) == 64


def test_missing_data_says_where_it_looked_and_how_to_point_elsewhere(tmp_path):
    with pytest.raises(UserError) as e:
        load_mnist(str(tmp_path / "nowhere"), download=False, split="train")
    message = str(e.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "GANCTL_DATA" in message and "dataset.root" in message
    assert "\n" not in message


def test_cifar10_is_read_channel_first_with_its_labels(tmp_path, cifar_files_pass_their_checksums):
    written = write_cifar10(tmp_path)
    train, test = load_cifar10(str(tmp_path), False, "train"), load_cifar10(str(tmp_path), False, "test")
    assert (len(train), len(test), len(load_cifar10(str(tmp_path), False, "all"))) == (40, 16, 56)
    assert (train.img_channels, train.img_size, train.num_classes) == (3, 32, 10)
    for data, (images, labels) in ((train, written["train"]), (test, written["test"])):
        assert torch.equal(data.images, torch.from_numpy(images))  # (N, 3, 32, 32), byte for byte
        assert torch.equal(data.labels, torch.from_numpy(labels).long())
    x, y = next(train.epoch(0, batch_size=8))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64


def test_cifar10_files_that_fail_their_checksums_are_refused_in_one_line(tmp_path):
    write_cifar10(tmp_path)  # not the published files: torchvision's MD5 check refuses them
    with pytest.raises(UserError) as e:
        load_cifar10(str(tmp_path), download=False, split="train")
    message = str(e.value)
    assert f"incomplete or corrupted in {tmp_path / 'cifar-10-batches-py'}" in message
    assert "GANCTL_DATA" in message
    assert "\n" not in message


def test_a_failed_download_says_not_found_even_after_it_made_the_folder(tmp_path, monkeypatch):
    import torchvision.datasets

    def failing_download(self):  # what torchvision does without a network: the folder, then an error
        os.makedirs(self.raw_folder, exist_ok=True)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", failing_download)
    with pytest.raises(UserError) as e:
        load_mnist(str(tmp_path), download=True, split="train")
    assert f"MNIST not found in {tmp_path / 'MNIST' / 'raw'} and could not be downloaded (Error downloading" in str(e.value)


def test_limit_is_a_fixed_class_balanced_subset():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 4)  # class 2 has fewer than its share
    keep = balanced_subset(labels, 30, 3)
    assert len(keep) == 30 and len(set(keep.tolist())) == 30
    assert torch.bincount(labels[keep], minlength=3).tolist() == [13, 13, 4]  # 2's shortfall spread
    assert torch.equal(keep, balanced_subset(labels, 30, 3))  # the same subset every time
    assert torch.equal(balanced_subset(labels, 500, 3), torch.arange(84))  # more than there is: all


def test_a_limited_dataset_serves_only_its_subset_and_keeps_labels_with_images(data_root):
    full = load_mnist(str(data_root), False, "train")
    small = load_mnist(str(data_root), False, "train", limit=20, seed=3)
    assert len(small) == 20 and torch.bincount(small.labels, minlength=10).tolist() == [2] * 10
    keep = balanced_subset(full.labels, 20, 10)
    assert torch.equal(small.images, full.images[keep]) and torch.equal(small.labels, full.labels[keep])
    seen = torch.cat([y for _, y in small.epoch(0, batch_size=5)])
    assert sorted(seen.tolist()) == sorted(small.labels.tolist())


def test_a_limited_folder_keeps_both_classes(image_folder):
    data = load_folder(str(image_folder), img_size=16, channels=3, num_workers=0, cache=False, limit=6)
    assert len(data) == 6 and sorted(data.dataset.labels) == [0, 0, 0, 1, 1, 1]


def test_a_cached_folder_decodes_once_and_serves_the_same_images(image_folder, monkeypatch):
    streamed = load_folder(str(image_folder), img_size=16, channels=3, num_workers=0, cache=False)
    cached = load_folder(str(image_folder), img_size=16, channels=3, num_workers=0, cache=True)
    x, y = streamed.arrays()
    assert torch.equal(cached.images, x) and torch.equal(cached.labels, y)
    assert (cached.img_channels, cached.img_size, cached.num_classes, len(cached)) == (3, 16, 2, 24)

    def no_decoding(self, i):
        raise AssertionError("an epoch decoded an image")
    monkeypatch.setattr(_ImageFiles, "__getitem__", no_decoding)
    batches = list(cached.epoch(0, batch_size=8))
    assert len(batches) == 3 and batches[0][0].shape == (8, 3, 16, 16) and batches[0][0].dtype == torch.float32
