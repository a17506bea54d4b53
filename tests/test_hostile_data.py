"""Hostile input, second round: a saved config is data (no interpolation, no environment), sizes
are refused before they are allocated, folders are read as a user means them, and values or
options that make no sense are refused in one line."""
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import SHRINK, one_line_error
from ganctl.training import memory
from ganctl.cli import sweep
from ganctl.data import load_folder
from ganctl.errors import UserError
from ganctl.run.checkpoint import load_checkpoint
from ganctl.training.loop import train

SECRET = "GANCTL_TEST_SECRET"  # an environment variable a crafted file would like to read


def crafted(tiny_run: Path, where: Path, edit) -> Path:
    """tiny_run's last.pt with `edit(state)` applied, saved as `where`."""
    state = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=True)
    edit(state)
    torch.save(state, where)
    return where


# Every form OmegaConf would resolve: environment, decoding, the clock, Hydra's, a key of the config
# itself, a nested one, and a string its grammar cannot parse.
INTERPOLATIONS = ["${oc.env:GANCTL_TEST_SECRET}", "${oc.env:GANCTL_TEST_SECRET}/sub", "x${oc.decode:'[1]'}",
                  "${now:%Y}", "${ganctl_now:%Y}", "${hydra:runtime.cwd}", "${dataset.split}",
                  "${oc.env:${oc.env:GANCTL_TEST_SECRET}}", "${("]


@pytest.mark.parametrize("root", INTERPOLATIONS)
def test_eval_takes_a_saved_dataset_root_literally(tiny_run, tmp_path, ganctl, data_root, root):
    # The variable names real data: had the root been resolved, the eval would have found it and run.
    path = crafted(tiny_run, tmp_path / "c.pt", lambda s: s["cfg"]["dataset"].update(root=root))
    code, _, err = ganctl("eval", f"ckpt={path}", "n=16", cwd=tmp_path, env={SECRET: str(data_root)})
    one_line_error(code, err, f"MNIST not found in {tmp_path / root}/MNIST/raw")


def test_a_saved_root_under_home_is_not_expanded(tiny_run, tmp_path, ganctl, data_root):
    path = crafted(tiny_run, tmp_path / "c.pt", lambda s: s["cfg"]["dataset"].update(root="~"))
    code, _, err = ganctl("eval", f"ckpt={path}", "n=16", cwd=tmp_path, env={"HOME": str(data_root)})
    one_line_error(code, err, f"MNIST not found in {tmp_path / '~'}/MNIST/raw")


@pytest.mark.parametrize("value", INTERPOLATIONS)
def test_resume_keeps_a_saved_string_literally(tiny_run, ganctl, value):
    # Resume replays a saved value whose default has changed since: it must stay data there too.
    crafted(tiny_run, tiny_run / "checkpoints" / "last.pt", lambda s: s["cfg"]["model"].update(name=value))
    code, out, err = ganctl("train", f"resume={tiny_run}", "trainer.max_steps=3", cwd=tiny_run.parent,
                            env={SECRET: "the-secret"})
    assert code == 0 and "keeps the run's model.name=" in err, err
    assert "the-secret" not in out + err + (tiny_run / "train.log").read_text()
    assert load_checkpoint(tiny_run / "checkpoints" / "last.pt")["cfg"]["model"]["name"] == value


@pytest.mark.parametrize("command", ["sample", "summary"])
def test_sample_and_summary_print_saved_strings_literally(tiny_run, tmp_path, ganctl, command):
    def edit(state):
        state["cfg"]["model"]["name"] = "${oc.env:GANCTL_TEST_SECRET}"
        state["cfg"]["dataset"]["root"] = "${("
    path = crafted(tiny_run, tmp_path / "c.pt", edit)
    code, out, err = ganctl(command, f"ckpt={path}", *(["label=3"] if command == "sample" else []),
                            cwd=tmp_path, env={SECRET: "the-secret"})
    if command == "sample":  # refused, and the message quotes the saved name as it is
        one_line_error(code, err, "model=${oc.env:GANCTL_TEST_SECRET}")
    else:
        assert code == 0 and "model=${oc.env:GANCTL_TEST_SECRET}" in out, err
    assert "the-secret" not in out + err


def test_eval_of_a_run_trained_from_a_folder_whose_path_holds_braces(tmp_path, ganctl, image_folder,
                                                                   short_classifier_fit):
    import shutil
    short_classifier_fit(5)
    root = tmp_path / "${x}" / "imgs"
    shutil.copytree(image_folder, root)
    args = ["dataset=folder", f"dataset.root={root}", "dataset.img_size=16", *SHRINK, "trainer.eval_every=null"]
    assert ganctl("train", *args, "hydra.run.dir=run", cwd=tmp_path)[0] == 0
    code, out, err = ganctl("eval", "ckpt=run", "n=16", cwd=tmp_path)
    assert code == 0 and "fid_floor" in out, err


@pytest.mark.parametrize("override", ["dataset.root=${oc.env:GANCTL_TEST_SECRET}", "+trainer.x=${now:%Y}",
                                      "trainer.seed=${oc.decode:'5'}", "dataset.root=[${oc.env:HOME}]"])
def test_saved_overrides_with_interpolations_are_not_replayed(tiny_run, tmp_path, ganctl, override):
    saved = tiny_run / ".hydra" / "overrides.yaml"
    saved.write_text(yaml.safe_dump([*yaml.safe_load(saved.read_text()), override]))
    before = (tiny_run / "checkpoints" / "last.pt").read_bytes()
    code, _, err = ganctl("train", f"resume={tiny_run}", "trainer.max_steps=4", cwd=tmp_path, env={SECRET: "x"})
    one_line_error(code, err, "refusing to replay", "${...} would be resolved", "nothing was resumed")
    assert (tiny_run / "checkpoints" / "last.pt").read_bytes() == before


def test_a_sweep_summary_reads_saved_overrides_as_data(tmp_path, monkeypatch):
    job = tmp_path / "0_dcgan_bce"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["dataset.root=${oc.env:GANCTL_TEST_SECRET}"]))
    monkeypatch.setenv(SECRET, "the-secret")
    (row,) = sweep.job_rows(tmp_path)
    assert row["overrides"] == "dataset.root=${oc.env:GANCTL_TEST_SECRET}"


@pytest.mark.parametrize("edit,says", [
    (lambda s: s["rng"].update(torch=s["rng"]["torch"][:-8]), "rng is not a saved random state"),
    (lambda s: s["rng"].update(cuda=[torch.zeros(2, 2, dtype=torch.uint8)]), "rng is not a saved random state"),
    (lambda s: s.update(augment={"p": torch.tensor(5.0), "rt": torch.tensor(0.0), "signs": torch.tensor(0.0),
                                 "count": 0}), "augment is not ADA's saved state"),
    (lambda s: s.update(augment={"p": torch.tensor(float("nan")), "rt": torch.tensor(0.0),
                                 "signs": torch.tensor(0.0), "count": 0}), "augment is not ADA's saved state"),
    (lambda s: s.update(augment={"p": torch.tensor(0.5), "rt": torch.tensor(0.0),
                                 "signs": torch.tensor(float("inf")), "count": 2}), "augment is not ADA's saved state"),
])
def test_a_crafted_state_is_refused_on_load_and_last_pt_kept(tiny_run, tmp_path, ganctl, edit, says):
    last = tiny_run / "checkpoints" / "last.pt"
    crafted(tiny_run, last, edit)
    before = last.read_bytes()
    one_line_error(*ganctl("train", f"resume={tiny_run}", "trainer.max_steps=4", cwd=tmp_path)[::2], says)
    assert last.read_bytes() == before


@pytest.mark.parametrize("edit,says", [
    (lambda s: s["cfg"]["trainer"].pop("noise"), "saved config has no trainer.noise"),
    (lambda s: s["cfg"]["trainer"].update(noise="${oc.env:HOME}"), "cfg.trainer.noise='${oc.env:HOME}' is not normal"),
    (lambda s: s.update(classes=[torch.zeros(3)]), "classes is not a list of class names"),
])
def test_a_saved_config_without_a_value_it_needs_is_one_line(tiny_run, tmp_path, ganctl, edit, says):
    path = crafted(tiny_run, tmp_path / "c.pt", edit)
    one_line_error(*ganctl("sample", f"ckpt={path}", cwd=tmp_path)[::2], says)


# --- sizes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,says", [
    (["dataset.img_size=4096"], "dataset.img_size=4096: must be in [8, 1024]"),
    (["dataset.img_size=512"], "DCGAN is built for images up to 256 px"),
    (["model=resnet", "dataset.img_size=48"], "model=resnet needs dataset.img_size 32, 64, 128"),
    (["model=resnet", "model.G.ch=0"], "model.G.ch=0: must be >= 1"),
    (["model=resnet", "model.D.ch=-1"], "model.D.ch=-1: must be >= 1"),
])
def test_sizes_a_model_is_not_built_for_are_refused(tmp_path, ganctl, image_folder, args, says):
    for command in ("summary", "train"):
        one_line_error(*ganctl(command, "dataset=folder", f"dataset.root={image_folder}", *args, cwd=tmp_path)[::2],
                       says)
    assert list(tmp_path.iterdir()) == []


def only_free(monkeypatch, n_bytes: int):
    monkeypatch.setattr(memory, "available_bytes", lambda device: n_bytes)


@pytest.mark.parametrize("command", ["summary", "train"])
def test_more_memory_than_there_is_is_refused_before_allocating(tmp_path, ganctl, image_folder, monkeypatch, command):
    only_free(monkeypatch, 10**8)  # 100 MB: an MLP G for 256 px RGB is 200M parameters
    args = ["dataset=folder", f"dataset.root={image_folder}", "model=gan", "dataset.img_size=256"]
    one_line_error(*ganctl(command, *args, cwd=tmp_path)[::2], "needs about", "GB of memory", "0.1 GB free",
                   "lower dataset.img_size")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_cache_larger_than_memory_is_refused_before_decoding(image_folder, monkeypatch):
    only_free(monkeypatch, 24 * 3 * 64 * 64 - 1)  # one byte less than the 24 images at 64 px
    with pytest.raises(UserError, match=r"dataset.cache=true \(24 images of 3x64x64\) needs about .*dataset.cache=false"):
        load_folder(str(image_folder), 64, 3, 0, cache=True)


def test_the_estimate_counts_weights_adam_ema_and_layer_outputs_by_hand():
    class G(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 6)

        def forward(self, z, y=None):
            return self.fc(z).view(-1, 1, 2, 3)

    class D(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(6, 1)

        def forward(self, x, y=None):
            return self.fc(x.flatten(1))

    with torch.device("meta"):
        fp = memory.footprint(G(), D(), batch_size=8, z_dim=4, num_classes=0)
    assert fp == {"G": 30 * 4, "D": 7 * 4, "G_acts": 8 * 6 * 4, "D_acts": 8 * 1 * 4}
    # weights, gradients and Adam's two moments of both, G's average, G's batch, D on two batches
    assert memory.training_bytes(fp) == 4 * (120 + 28) + 120 + 192 + 2 * 32


@pytest.mark.parametrize("args,says", [
    (["arithmetic=1+2", "n=100000"], "n=100000: arithmetic draws 1 to 10000 results"),
    (["interpolate=z", "steps=100000"], "steps=100000 images: an interpolation draws 1 to 10000"),
    (["interpolate=z", "n=100000"], "n=100000 paths of steps=10"),
    ([f"arithmetic='[{'9' * 500}]'"], "an index of 500 digits is out of range"),
    ([f"arithmetic={'9' * 900}"], "an index of 900 digits is out of range"),  # a string, not Hydra's int
    ([f"arithmetic='{'+1' * 20000}'"], "arithmetic= is 40000 characters long"),
    ([f"arithmetic='{'+1' * 100}'"], "arithmetic= has more than 64 terms"),
    (["n=1000000000", "out=all.npz"], "n=1000000000 images of 1x28x28 needs about 784 GB"),
    (["arithmetic=1+2", "interpolate=z"], "arithmetic= and interpolate= draw different pictures"),
    (["steps=4"], "steps=4 shapes an interpolation only"),
])
def test_sample_sizes_and_combinations_are_one_line(tiny_run, tmp_path, ganctl, args, says):
    work = tmp_path / "work"
    work.mkdir()
    one_line_error(*ganctl("sample", f"ckpt={tiny_run}", *args, cwd=work)[::2], says)
    assert list(work.iterdir()) == []


def test_summary_of_a_run_refuses_options_it_would_ignore(tiny_run, tmp_path, ganctl):
    one_line_error(*ganctl("summary", f"ckpt={tiny_run}", "model=gan", cwd=tmp_path)[::2],
                   "model=gan would be ignored")
    assert ganctl("summary", f"ckpt={tiny_run}", "depth=1", cwd=tmp_path)[0] == 0


# --- folders ---------------------------------------------------------------------------------------
def png16(path: Path, values: np.ndarray) -> None:
    """A 16-bit PNG (grey (H, W, 1) or RGB (H, W, 3)), written by hand: PIL cannot write 16-bit RGB."""
    h, w, c = values.shape
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 3: 2}[c], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("kind", ["16-bit grey PNG", "16-bit RGB PNG", "float TIFF in [0, 1]", "8-bit PNG"])
def test_wide_images_are_scaled_to_8_bit(tmp_path, kind):
    level = 0.6  # a mid-grey, in [0, 1]
    for i in range(4):
        if kind == "16-bit grey PNG":
            png16(tmp_path / f"{i}.png", np.full((8, 8, 1), round(level * 65535)))
        elif kind == "16-bit RGB PNG":
            png16(tmp_path / f"{i}.png", np.full((8, 8, 3), round(level * 65535)))
        elif kind == "float TIFF in [0, 1]":
            Image.fromarray(np.full((8, 8), level, np.float32)).save(tmp_path / f"{i}.tif")
        else:
            Image.fromarray(np.full((8, 8), round(level * 255), np.uint8)).save(tmp_path / f"{i}.png")
    for channels in (1, 3):
        images = load_folder(str(tmp_path), 8, channels, 0, cache=True).images
        assert images.shape == (4, channels, 8, 8) and images.eq(round(level * 255)).all(), images.unique()


def test_a_photo_is_read_upright_as_its_exif_orientation_says(tmp_path):
    pixels = np.zeros((8, 16, 3), np.uint8)
    pixels[:, :8] = 255  # stored 16 wide and 8 high, white on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", exif=exif, quality=100)
    image = load_folder(str(tmp_path), 16, 1, 0, cache=True).images[0, 0].float()  # 16 x 32 upright, cropped
    assert image[:8].mean() > 200 and image[8:].mean() < 50  # white on top once upright (else white on the left)


def test_images_without_an_8_bit_reading_are_refused_with_a_count(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((8, 8), 128, np.uint8)).save(tmp_path / f"ok{i}.png")
    for i in range(2):
        Image.fromarray(np.full((8, 8), 3.5, np.float32)).save(tmp_path / f"hdr{i}.tif")
    with pytest.raises(UserError, match=r"2 of 5 images under .* do not read as 8-bit \(first: .*hdr0.tif: F values "
                                        r"in \[3.5, 3.5\], outside \[0, 1\]\)"):
        load_folder(str(tmp_path), 8, 1, 0, cache=True)


def test_hidden_folders_and_files_are_not_classes_or_images(tmp_path, image_folder):
    import shutil
    root = tmp_path / "imgs"
    shutil.copytree(image_folder, root)
    for hidden in (root / ".ipynb_checkpoints", root / ".git" / "objects", root / "cats" / ".ipynb_checkpoints"):
        hidden.mkdir(parents=True)
        shutil.copy(image_folder / "cats" / "0.png", hidden / "0-checkpoint.png")
    shutil.copy(image_folder / "cats" / "0.png", root / "dogs" / "._0.png")
    data = load_folder(str(root), 16, 3, 0, cache=True)
    assert data.class_names == ["cats", "dogs"] and data.class_sizes() == [12, 12]


def test_an_empty_class_is_refused_under_a_conditional_model(tmp_path, make_cfg, image_folder):
    import shutil
    root = tmp_path / "imgs"
    shutil.copytree(image_folder, root)
    (root / "birds").mkdir()
    folder = ["dataset=folder", f"dataset.root={root}", "dataset.img_size=16", "trainer.max_steps=1"]
    with pytest.raises(UserError, match=r"1 of 3 classes have no images \('birds'.*model=cdcgan is conditional"):
        train(make_cfg("model=cdcgan", *folder), tmp_path / "run")
    train(make_cfg("model=dcgan", *folder), tmp_path / "run2")  # unconditional: the labels are not used


def test_a_limit_that_empties_classes_is_refused_under_a_conditional_model(make_cfg, tmp_path):
    with pytest.raises(UserError, match=r"5 of 10 classes have no images .*too small a dataset.limit"):
        train(make_cfg("model=cdcgan", "dataset.limit=5", "trainer.batch_size=5"), tmp_path)


# --- values and options ---------------------------------------------------------------------------
@pytest.mark.parametrize("args,says", [
    (["loss.r1=inf"], "loss.r1=inf: must be finite"),
    (["augment=ada", "augment.ada.kimg=inf"], "augment.ada.kimg=inf: must be finite"),
    (["loss=wgan_gp", "loss.gp_weight=nan"], "loss.gp_weight=nan: must be finite"),
    (["optimizer.betas=[0.5,inf]"], "optimizer.betas=[0.5, inf]: must be finite"),
    (["augment=diffaug", "augment.policy=[color,color]"], "must be a list of distinct ops"),
    (["augment=diffaug", "augment.policy=[]"], "augment.policy=[] with augment=diffaug turns augmentation off"),
    (["augment=ada", "augment.policy=[]"], "ADA needs ops to apply"),
    (["augment=diffaug", "augment.ada={target:0.6}"], "augment.ada is null in this config; choose augment=ada"),
    (["model=resnet", "model.G.upsample=nearest"], "model.G.upsample=nearest: no such key; model.G has ch"),
])
def test_values_that_make_no_sense_are_refused(tmp_path, ganctl, args, says):
    one_line_error(*ganctl("train", *args, cwd=tmp_path)[::2], says)
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_diverges_before_its_first_checkpoint_says_so(make_cfg, tmp_path, monkeypatch):
    from ganctl.training.ema import AveragedGenerator

    def poison(self, G, step):
        with torch.no_grad():
            next(G.parameters()).fill_(float("nan"))
    monkeypatch.setattr(AveragedGenerator, "update", poison)
    with pytest.raises(UserError, match=r"diverged by step \d: .*no checkpoint had been written yet \(the log"):
        train(make_cfg("trainer.max_steps=3", "trainer.log_every=1"), tmp_path)
    assert not (tmp_path / "checkpoints" / "last.pt").exists()


def test_a_failed_start_leaves_no_empty_outputs_folder_and_keeps_existing_ones(tmp_path, ganctl):
    args = ["dataset=folder", f"dataset.root={tmp_path / 'missing'}", "trainer.max_steps=1"]
    one_line_error(*ganctl("train", *args, cwd=tmp_path)[::2], "is not a folder")
    assert list(tmp_path.iterdir()) == []  # neither outputs/<day>/ nor outputs/
    (tmp_path / "outputs" / "mine").mkdir(parents=True)
    one_line_error(*ganctl("train", *args, cwd=tmp_path)[::2], "is not a folder")
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["mine"]
