"""`ganctl sample arithmetic=...`: the parser, the combined latent, and the command end to end."""
import pytest
import torch
from PIL import Image

from conftest import one_line_error
from ganctl.sampling import arithmetic
from ganctl.run.checkpoint import load_checkpoint
from ganctl.data import to_uint8
from ganctl.errors import UserError
from ganctl.sampling.generate import generate, latents
from ganctl.training.wiring import load_generator
from ganctl.training.loop import train


@pytest.mark.parametrize("text,terms", [
    ("3+7-12", [(1, [3]), (1, [7]), (-1, [12])]),
    ("[3,4,5]-[12,13]+[20]", [(1, [3, 4, 5]), (-1, [12, 13]), (1, [20])]),
    (" [ 3 , 4 ] - 0 ", [(1, [3, 4]), (-1, [0])]),
    ("-2", [(-1, [2])]),
    ("12", [(1, [12])]),
])
def test_the_parser_reads_signs_and_mean_terms(text, terms):
    assert arithmetic.parse(text) == terms


@pytest.mark.parametrize("text", ["", "3 7", "3+", "[3,]", "[]", "3*2", "a+b", "[3,4", "3--4"])
def test_the_parser_refuses_what_it_cannot_read(text):
    with pytest.raises(UserError, match="arithmetic="):
        arithmetic.parse(text)


class Linear(torch.nn.Module):
    """A generator whose output is a known function of (z, y)."""
    def __init__(self, z_dim=6):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(z_dim, 16, generator=torch.Generator().manual_seed(1)))

    def forward(self, z, y=None):
        out = torch.tanh(z @ self.w + (0 if y is None else y[:, None].float()))
        return out.view(-1, 1, 4, 4)


def test_the_result_is_g_of_exactly_the_combined_latent():
    G = Linear()
    drawn = arithmetic.render(G, "[0,1,2]-[3,4]+5", 4, 6, "normal", 7, None, "cpu")
    z = latents(6, 6, "normal", 7)
    by_hand = (z[0] + z[1] + z[2]) / 3 - (z[3] + z[4]) / 2 + z[5]
    torch.testing.assert_close(drawn["result_z"][0], by_hand)
    assert torch.equal(drawn["results"], G(drawn["result_z"]))
    jitter = drawn["result_z"][1:] - by_hand
    assert jitter.abs().max() <= arithmetic.JITTER and jitter.abs().min() > 0
    torch.testing.assert_close(drawn["means"][1], G(((z[3] + z[4]) / 2)[None])[0])
    # A conditional model draws everything with the one label given.
    assert torch.equal(arithmetic.render(G, "1", 1, 6, "normal", 7, 3, "cpu")["results"][0],
                       G(z[1][None], torch.tensor([3]))[0])


def test_a_latent_is_the_same_whatever_the_grid_size():
    # torch's CPU normal draws come in blocks of 16 values: 63 rows of 100 end in a partial block.
    for noise in ("normal", "uniform"):
        torch.testing.assert_close(latents(63, 100, noise, 5), latents(64, 100, noise, 5)[:63], rtol=0, atol=0)
        torch.testing.assert_close(latents(3, 7, noise, 5), latents(40, 7, noise, 5)[:3], rtol=0, atol=0)


def test_indices_name_the_images_of_the_seeded_grid(tiny_run):
    state = load_checkpoint(tiny_run / "checkpoints" / "last.pt")
    G = load_generator(state, tiny_run, "G_ema", torch.device("cpu"))
    z_dim, noise = state["cfg"]["model"]["z_dim"], state["cfg"]["trainer"]["noise"]
    grid, _ = generate(G, 10, None, z_dim, noise, 3, "cpu")  # ganctl sample seed=3 n=10
    drawn = arithmetic.render(G, "[9,4]-7", 2, z_dim, noise, 3, None, "cpu")
    assert torch.equal(to_uint8(drawn["terms"][0][2]), grid[[9, 4]])
    assert torch.equal(to_uint8(drawn["terms"][1][2]), grid[[7]])


def test_the_command_writes_one_png(tiny_run, tmp_path, ganctl):
    code, out, err = ganctl("sample", f"ckpt={tiny_run}", "arithmetic=[3,4,5]-[12,13]+[20]", "n=6", cwd=tmp_path)
    assert code == 0, err
    with Image.open(tmp_path / "arithmetic.png") as png:
        size = png.size
    # 4 rows (3 terms, the results) of max(3 + 2, 6) = 6 images of 28 px, 2 px apart.
    assert size == (2 + 6 * 30, 2 + 4 * 30) and "arithmetic.png" in out


@pytest.mark.parametrize("args,says", [
    (["arithmetic=3+"], ["arithmetic='3+'", "cannot read"]),
    (["arithmetic=10000+1"], ["index 10000 is out of range"]),
    (["arithmetic=1", "label=2"], ["label=2", "unconditional"]),
    (["arithmetic=1", "out=a.npz"], ["out=a.npz", ".png"]),
    (["arithmetic=1", "n=0"], ["n=0"]),
])
def test_arithmetic_mistakes_are_one_line(tiny_run, tmp_path, ganctl, args, says):
    one_line_error(*ganctl("sample", f"ckpt={tiny_run}", *args, cwd=tmp_path)[::2], *says)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # tiny_run lives here; nothing else was written


def test_a_conditional_model_needs_one_label(make_cfg, tmp_path, ganctl):
    train(make_cfg("model=cdcgan", "model.G.ngf=8", "model.D.ndf=8"), tmp_path / "run")
    one_line_error(*ganctl("sample", f"ckpt={tmp_path / 'run'}", "arithmetic=1-2", cwd=tmp_path)[::2],
                   "needs one label")
    code, _, err = ganctl("sample", f"ckpt={tmp_path / 'run'}", "arithmetic=1-2", "label=4", cwd=tmp_path)
    assert code == 0, err
