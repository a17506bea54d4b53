"""Self-conditioning (model.clusters): k-means of the images, G drawing each cluster as often as
the data holds it, and a default dcgan run trained, saved and sampled with them."""
import pytest
import torch

from ganctl.errors import UserError
from ganctl.nets.dcgan import Generator
from ganctl.run.checkpoint import load_checkpoint
from ganctl.training.clusters import clustered, kmeans
from ganctl.training.loop import train
from ganctl.training.step import sample_noise
from ganctl.data import InMemoryImages


def three_kinds(n: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (3n, 1, 8, 8) of three kinds (dark, bright, left half bright), shuffled, and the kind of each."""
    g = torch.Generator().manual_seed(0)
    kinds = torch.arange(3).repeat_interleave(n)[torch.randperm(3 * n, generator=g)]
    base = torch.stack([torch.zeros(8, 8), torch.ones(8, 8), torch.cat([torch.ones(8, 4), torch.zeros(8, 4)], 1)])
    noise = 0.1 * torch.rand(3 * n, 8, 8, generator=g)
    images = ((base[kinds] * 0.8 + noise) * 255).to(torch.uint8)[:, None]
    return images, kinds


def test_kmeans_finds_the_three_kinds_of_image_and_is_the_same_for_a_seed():
    images, kinds = three_kinds()
    ids = kmeans(images, 3, seed=0)
    # One cluster per kind: the pairs (kind, cluster) are a one-to-one map.
    assert len(set(zip(kinds.tolist(), ids.tolist()))) == 3 and len(set(ids.tolist())) == 3
    assert torch.equal(ids, kmeans(images, 3, seed=0))


def test_clustered_data_carries_the_clusters_as_labels():
    images, _ = three_kinds()
    data = InMemoryImages(images, torch.zeros(len(images)), 1)
    relabelled, sizes = clustered(data, 3, seed=0)
    assert sorted(sizes) == [30, 30, 30] and relabelled.num_classes == 3
    _, y = next(relabelled.epoch(0, 90))
    assert torch.bincount(y).tolist() == [30, 30, 30]
    with pytest.raises(UserError, match="model.clusters=100 needs at least 100 images"):
        clustered(data, 100, seed=0)


def generator(sizes, noise="normal"):
    return Generator(8, 1, 28, clusters=sizes, noise=noise, ngf=4, embed_dim=4, cbn=False, codes=0,
                     upsample="transposed", cond="concat", noise_injection=False).eval()


@pytest.mark.parametrize("noise", ["normal", "uniform"])
def test_g_draws_each_cluster_as_often_as_the_data_holds_it(noise):
    sizes = [100, 300, 0, 600]  # an empty cluster is never drawn
    G = generator(sizes, noise)
    z = sample_noise(40_000, 8, noise, "cpu", torch.Generator().manual_seed(0))
    shares = torch.bincount(G.cluster(z), minlength=4) / len(z)
    assert torch.allclose(shares, torch.tensor([0.1, 0.3, 0.0, 0.6]), atol=0.01)


def test_without_a_label_g_draws_its_cluster_from_z_and_the_net_never_reads_that_entry():
    G = generator([1, 1, 1])
    z = torch.randn(6, 8)
    assert torch.equal(G(z), G(z, G.cluster(z)))
    moved = z.clone()
    moved[:, 0] += 1.0  # picks other clusters, but given the label the image is the same
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.equal(G(z, y), G(moved, y))


def test_a_default_dcgan_run_is_self_conditioned_and_saves_its_clusters(make_cfg, tmp_path):
    cfg = make_cfg("model.clusters=4")
    train(cfg, tmp_path)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    sizes = state["data"]["clusters"]
    assert len(sizes) == 4 and sum(sizes) == 64  # every training image of the tiny MNIST in one
    assert state["data"]["num_classes"] == 0  # sampled and evaluated as an unconditional model
    assert state["G_ema"]["cond.embed.weight"].shape[0] == 4


@pytest.mark.parametrize("args,says", [
    (["model=cdcgan", "model.clusters=10"], "model.clusters=10 conditions an unconditional model"),
    (["model.G.codes=10"], "model=dcgan has model.G.codes: set model.clusters=0"),
])
def test_clusters_refuse_models_that_are_conditioned_otherwise(make_cfg, tmp_path, args, says):
    with pytest.raises(UserError, match=says):
        train(make_cfg(*args), tmp_path)


def test_a_folder_decoded_every_epoch_is_refused_in_one_line(image_folder):
    from ganctl.data import load_folder
    data = load_folder(str(image_folder), img_size=16, channels=3, num_workers=0, cache=False)
    with pytest.raises(UserError, match="set dataset.cache=true, or model.clusters=0"):
        clustered(data, 2, seed=0)
