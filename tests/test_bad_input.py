"""Every bad input: one line on stderr, a non-zero exit, no traceback, nothing written or lost."""
import errno
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import one_line_error, run_ganctl
from ganctl.run import checkpoint
from ganctl.run.checkpoint import load_checkpoint, save_checkpoint
from ganctl.data import load_folder
from ganctl.errors import UserError
from ganctl.training.loop import train
from test_cli import assert_one_line_error


@pytest.mark.parametrize("args,says", [
    (["model=stylegan"], ["model/stylegan", "cdcgan, cgan, dcgan, gan"]),
    (["trainer.batch_size=abc"], ["trainer.batch_size=abc", "Integer"]),
    (["trainer.batch_size=0"], ["trainer.batch_size=0", ">= 1"]),
    (["optimizer.lr_g=-1"], ["optimizer.lr_g=-1.0", "> 0"]),
    (["loss=wgan_gp", "loss.gp_weight=-1"], ["loss.gp_weight=-1.0", ">= 0"]),
    (["loss.n_critic=0"], ["loss.n_critic=0", ">= 1"]),
    (["trainer.label_smoothing=1.5"], ["trainer.label_smoothing=1.5", "[0, 1)"]),
    (["model.D.pack=0"], ["model.D.pack=0", ">= 1"]),
    (["model.G.codes=1"], ["model.G.codes=1", "0 or >= 2"]),
    (["optimizer.betas=[1.5,0.9]"], ["optimizer.betas=[1.5, 0.9]", "two values in [0, 1)"]),
    (["model.betas=[0.9]"], ["model.betas=[0.9]", "two values in [0, 1)"]),
    (["dataset.limit=0"], ["dataset.limit=0", "null or >= 1"]),
])
def test_bad_values_are_refused_before_anything_is_written(tmp_path, args, says):
    assert_one_line_error(run_ganctl("train", *args, cwd=tmp_path), *says)
    assert list(tmp_path.iterdir()) == []  # no run directory, no log


def test_multirun_jobs_check_their_ranges_too(make_cfg, tmp_path):
    with pytest.raises(UserError, match="trainer.batch_size=0: must be >= 1"):
        train(make_cfg("trainer.batch_size=0"), tmp_path)


@pytest.mark.parametrize("args", [["model=cdcgan", "model.D.pack=2"], ["model.D.pack=3", "trainer.batch_size=8"]])
def test_packs_need_an_unconditional_model_and_a_batch_they_divide(make_cfg, tmp_path, args):
    with pytest.raises(UserError, match=r"model.D.pack=\d needs an unconditional model \(model.clusters=0\) and a trainer.batch_size"):
        train(make_cfg(*args), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_codes_need_an_unconditional_model(make_cfg, tmp_path):
    with pytest.raises(UserError, match="model.G.codes=10 needs an unconditional model"):
        train(make_cfg("model=cdcgan", "model.G.codes=10"), tmp_path)


def test_empty_folder_and_unreadable_images(tmp_path, caplog):
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    with pytest.raises(UserError, match="no images"):
        load_folder(str(tmp_path / "empty"), img_size=32, channels=3, num_workers=0, cache=False)
    images = tmp_path / "bad" / "cats"
    images.mkdir(parents=True)
    from PIL import Image
    for i in range(3):
        Image.new("RGB", (8, 8)).save(images / f"{i}.png")
    (images / "broken.png").write_bytes(b"not a png at all")
    good = (images / "0.png").read_bytes()
    (images / "truncated.png").write_bytes(good[:len(good) // 2])  # parses, but cannot be decoded
    os.mkfifo(images / "fifo.png")  # a special file: reading it would wait forever
    with caplog.at_level("WARNING"):
        assert len(load_folder(str(tmp_path / "bad"), img_size=32, channels=3, num_workers=0, cache=False)) == 3
    assert "skipping 2 of 5 image files" in caplog.text and "broken.png" in caplog.text
    for i in range(3):
        (images / f"{i}.png").unlink()
    with pytest.raises(UserError, match=r"none of the 2 image files under .* can be decoded"):
        load_folder(str(tmp_path / "bad"), img_size=32, channels=3, num_workers=0, cache=False)


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def full_disk(obj, f):
        f.write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(UserError, match=r"could not write checkpoint .*last.pt \(No space left on device; .* free there\); "
                                        r"the previous checkpoint there is intact"):
        save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


@pytest.mark.processes
def test_a_kill_at_any_moment_of_a_save_leaves_a_loadable_checkpoint(tmp_path):
    script = (f"import torch, sys; sys.path.insert(0, {str(checkpoint.__file__.rsplit('/ganctl/', 1)[0])!r})\n"
              "from ganctl.run.checkpoint import save_checkpoint\n"
              "i = 0\n"
              "while True:\n"
              f"    save_checkpoint({{'i': i, 'w': torch.full((4_000_000,), float(i))}}, {str(tmp_path / 'last.pt')!r})\n"
              "    i += 1\n")
    for delay in (0.9, 1.3, 1.7):
        proc = subprocess.Popen([sys.executable, "-c", script])
        try:  # the writer loops forever: never leave it behind, whatever happens here
            while not (tmp_path / "last.pt").exists():
                time.sleep(0.01)
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        state = torch.load(tmp_path / "last.pt", weights_only=True)
        assert torch.all(state["w"] == state["i"])  # whole, not torn


@pytest.mark.parametrize("content,says", [
    (None, "not a readable ganctl checkpoint"),  # truncated
    (b"\x00garbage" * 100, "not a readable ganctl checkpoint"),
    ("foreign", "not a ganctl checkpoint (missing"),
    ("pickle", "not a readable ganctl checkpoint"),
])
def test_truncated_corrupted_or_foreign_checkpoints_are_one_line(tmp_path, content, says):
    path = tmp_path / "model.pt"
    if content is None:
        save_checkpoint({"G": {"w": torch.ones(1000)}, "step": 1}, path)
        path.write_bytes(path.read_bytes()[:500])
    elif content == "foreign":
        torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    elif content == "pickle":  # an object weights_only refuses to build: it could run code
        torch.save({"G": torch.nn.Linear(2, 2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match=re.escape(says)):
        load_checkpoint(path)
    assert_one_line_error(run_ganctl("sample", f"ckpt={path}", cwd=tmp_path), says)


def test_out_of_memory_names_the_batch_size_and_a_way_out(make_cfg, tmp_path, monkeypatch):
    from ganctl.training import losses

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(losses.BCE, "g_loss", oom)
    with pytest.raises(UserError, match=r"out of memory on cpu at trainer.batch_size=16; try trainer.batch_size=8"):
        train(make_cfg(), tmp_path)


def write_bad_mnist(root, case: str):
    import numpy as np
    from conftest import write_idx, write_mnist
    raw = write_mnist(root) / "MNIST" / "raw"
    images = raw / "train-images-idx3-ubyte"
    if case == "labels do not match the images":
        write_idx(raw / "train-labels-idx1-ubyte", np.zeros(10, np.uint8))
    elif case == "a label outside the classes":
        write_idx(raw / "train-labels-idx1-ubyte", np.full(64, 12, np.uint8))
    elif case == "zero-byte IDX file":
        images.write_bytes(b"")
    elif case == "bad magic":
        images.write_bytes(b"\x01\x02\x03\x04" + images.read_bytes()[4:])


@pytest.mark.parametrize("case,says", [
    ("labels do not match the images", "has 64 images but 10 labels"),
    ("a label outside the classes", "64 labels outside its classes 0..9 (first: 12)"),
    ("zero-byte IDX file", "MNIST files in"),
    ("bad magic", "are not valid"),
])
def test_broken_dataset_files_are_one_line(tmp_path, ganctl, case, says):
    write_bad_mnist(tmp_path / "data", case)
    code, _, err = ganctl("train", "trainer.max_steps=1", "dataset.download=false", f"dataset.root={tmp_path / 'data'}",
                          "trainer.progress=false", cwd=tmp_path)
    one_line_error(code, err, says)


@pytest.mark.parametrize("args,says", [
    (["trainer.device=foo"], ["trainer.device=foo", "auto, cpu, cuda"]),
    ([f"trainer.seed={2**70}"], ["trainer.seed=", "in [0, 2**32)"]),
    (["model.G.ngf=0"], ["model.G.ngf=0", ">= 1"]),
    (["model=gan", "model.G.hidden=[16,0]"], ["model.G.hidden=[16, 0]", "widths >= 1"]),
    (["dataset=folder", "dataset.root=x", "dataset.channels=2"], ["dataset.channels=2", "1 (grey) or 3 (RGB)"]),
    (["model=cdcgan", "model.G.cond=add"], ["model.G.cond=add", "one of concat, multiply"]),
    (["model=cdcgan", "model.D.cond=input"], ["model.D.cond=input", "one of projection, channel"]),
    (["augment=diffaug", "augment.policy=[rotate]"], ["augment.policy=['rotate']", "color, translation, cutout"]),
    (["augment=diffaug", "augment.cutout=0"], ["augment.cutout=0.0", "in (0, 1]"]),
    (["augment=diffaug", "augment.translation=0.75"], ["augment.translation=0.75", "in (0, 0.5]"]),
    (["augment=diffaug", "augment.p=0"], ["augment.p=0.0", "in (0, 1]"]),
    (["augment=ada", "augment.p=0.5"], ["augment.p=0.5", "must be 1 under augment=ada"]),
])
def test_more_bad_values_are_refused_before_anything_is_written(tmp_path, ganctl, args, says):
    one_line_error(*ganctl("train", *args, cwd=tmp_path)[::2], *says)
    assert list(tmp_path.iterdir()) == []


def test_label_conditioning_of_an_unconditional_model_is_one_line(tmp_path, ganctl, data_root):
    code, _, err = ganctl("train", f"dataset.root={data_root}", "dataset.download=false", "model=dcgan", "model.clusters=0", "model.G.cond=multiply", "model.D.cond=channel",
                          cwd=tmp_path)
    one_line_error(code, err, "model.G.cond=multiply and model.D.cond=channel needs labels", "model=cdcgan")


@pytest.mark.parametrize("args,says", [
    (["out=adir.png"], ["out=adir.png", "Is a directory"]),
    (["out=afile"], ["out=afile", "File exists"]),
    (["n=20000"], ["n=20000 is too many for one PNG grid"]),
    (["device=foo"], ["device=foo"]),
    (["seed=-1"], ["seed=-1", "in [0, 2**32)"]),
])
def test_sample_mistakes_are_one_line(tiny_run, tmp_path, ganctl, args, says):
    (tmp_path / "adir.png").mkdir()
    (tmp_path / "afile").write_text("a file where a folder of PNGs would go")
    one_line_error(*ganctl("sample", f"ckpt={tiny_run}", *args, cwd=tmp_path)[::2], *says)


def test_sample_an_empty_label_list_is_one_line(make_cfg, tmp_path, ganctl):
    train(make_cfg("model=cdcgan", "model.G.ngf=8", "model.D.ndf=8"), tmp_path / "run")
    one_line_error(*ganctl("sample", f"ckpt={tmp_path / 'run'}", "label=[]", cwd=tmp_path)[::2],
                   "label=[] names no class")


def test_eval_that_cannot_write_its_json_prints_the_table_first(tiny_run, tmp_path, ganctl):
    (tiny_run / "eval.json").mkdir()  # stands for a read-only run directory (root writes anywhere)
    code, out, err = ganctl("eval", f"ckpt={tiny_run}", "n=16", cwd=tmp_path)
    one_line_error(code, err, "the table above was computed but", "eval.json")
    assert "fid_floor" in out  # the result was shown before the write failed


@pytest.mark.parametrize("args,says", [
    (["train", "trainer.max_step=5"], "trainer.max_step=5: no such key; did you mean trainer.max_steps?"),
    (["train", "+trainer.max_step=5"], "+trainer.max_step=5: no such key; did you mean trainer.max_steps?"),
    (["train", "loss=wgan_gp", "loss.gp_weigth=3"], "loss.gp_weigth=3: no such key; did you mean loss.gp_weight?"),
    (["sample", "labl=5"], "labl=5: no such key; did you mean label?"),
    (["eval", "n=abc"], "n=abc"),
    (["sample", "n=abc"], "n=abc"),
])
def test_typos_are_one_line_with_the_nearest_key(tmp_path, ganctl, args, says):
    one_line_error(*ganctl(*args, cwd=tmp_path)[::2], says)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_start_leaves_no_run_directory_and_no_empty_data_folder(tmp_path, ganctl, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    def download_fails(self):  # what torchvision does without a network: make the folder, then fail
        os.makedirs(self.raw_folder, exist_ok=True)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://example/, got:\n<urlopen error>")

    monkeypatch.setattr(tv_mnist.MNIST, "download", download_fails)
    code, _, err = ganctl("train", "trainer.max_steps=1", f"dataset.root={tmp_path / 'data'}", "hydra.run.dir=run",
                          cwd=tmp_path)
    one_line_error(code, err, "could not be downloaded (Error downloading train-images-idx3-ubyte.gz: Tried "
                              "https://example/, got: <urlopen error>)")
    assert list(tmp_path.iterdir()) == []  # neither run/ nor data/MNIST/raw
