"""A trained generator outside the CLI: the Python API draws what `ganctl sample` writes, and
`ganctl export` writes files (torch.export, ONNX) that a process without ganctl runs to the same
images."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import one_line_error
from ganctl import UserError, __version__, load
from ganctl.sampling.generate import latents
from ganctl.training.loop import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_root, image_folder):
    """runs[model]: a tiny finished run of that model (resnet on a 32 px folder), trained once for
    the module when a test first asks for it."""
    from hydra import compose, initialize_config_module

    from conftest import SHRINK, TINY_MODEL
    from ganctl.cli import registry
    registry.register()
    where = tmp_path_factory.mktemp("runs")
    data = {"resnet": ["dataset=folder", f"dataset.root={image_folder}", "dataset.img_size=32", "loss=hinge"]}

    class Runs(dict):
        def __missing__(self, model):
            extra = data.get(model, [f"dataset.root={data_root}", "dataset.download=false"])
            with initialize_config_module("ganctl.conf", version_base="1.3"):
                cfg = compose("train", overrides=[*SHRINK, *TINY_MODEL[model], f"model={model}", *extra])
            train(cfg, where / model)
            self[model] = where / model
            return self[model]
    return Runs()


def test_the_api_draws_what_ganctl_sample_writes(runs, tmp_path, ganctl):
    G = load(runs["cdcgan"])
    assert (G.z_dim, G.num_classes, G.img_channels, G.img_size) == (100, 10, 1, 28)
    args = (f"ckpt={runs['cdcgan']}", "n=10", "label=[1,2]", "seed=3")
    assert ganctl("sample", *args, "out=s.npz", cwd=tmp_path)[0] == 0
    assert ganctl("sample", *args, "out=s.png", cwd=tmp_path)[0] == 0
    images = G.sample(10, label=[1, 2], seed=3)
    assert images.dtype == torch.uint8 and torch.equal(images, torch.from_numpy(np.load(tmp_path / "s.npz")["images"]))
    assert np.array_equal(np.asarray(G.grid(images, nrow=5)), np.asarray(Image.open(tmp_path / "s.png").convert("RGB")))
    assert torch.equal(G.sample(10, label=[1, 2], seed=3, value_range=(0, 1)), images.float() / 255)


def test_the_api_walks_and_refuses_as_the_cli_does(runs, tmp_path):
    G = load(runs["cdcgan"], device="cpu")
    walk = G.interpolate("label", n=3, steps=4, label=[3, 8])
    assert walk.shape == (3, 4, 1, 28, 28) and walk.dtype == torch.uint8
    assert G.grid(walk).size == (4 * 30 + 2, 3 * 30 + 2)  # a row per path, 2-pixel gaps
    with pytest.raises(UserError, match=r"label=12 is not a class of this model: labels are 0..9"):
        G.sample(4, label=12)
    with pytest.raises(UserError, match="does not exist|no checkpoints/last.pt"):
        load(tmp_path / "nothing")


def test_an_export_that_fails_is_one_line_and_writes_nothing(runs, tmp_path, ganctl, monkeypatch):
    def cannot(*args, **kwargs):
        raise RuntimeError("Could not guard on data-dependent expression")
    monkeypatch.setattr(torch.export, "export", cannot)
    one_line_error(*ganctl("export", f"ckpt={runs['dcgan']}", "out=g.pt2", cwd=tmp_path)[::2],
                   "cannot be exported as pt2 (RuntimeError: Could not guard")
    assert list(tmp_path.iterdir()) == []


# Runs in a fresh interpreter that never imports ganctl: loads the file, checks its metadata, and
# writes the images of the z (and labels) it is given.
RUNNER = """
import json, sys
import numpy as np
path, fmt, inputs, out = sys.argv[1:]
given = np.load(inputs)
feed = {"z": given["z"], **({"labels": given["labels"]} if "labels" in given else {})}
if fmt == "pt2":
    import torch
    extra = {"ganctl.json": ""}
    program = torch.export.load(path, extra_files=extra)
    meta = json.loads(extra["ganctl.json"])
    images = program.module()(*(torch.from_numpy(v) for v in feed.values())).detach().numpy()
else:
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = {p.key: json.loads(p.value) for p in __import__("onnx").load(path).metadata_props}
    images = session.run(None, feed)[0]
assert "ganctl" not in sys.modules, "the file needed ganctl"
np.savez(out, images=images, meta=json.dumps(meta))
"""


@pytest.mark.processes
@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
@pytest.mark.parametrize("model", ["gan", "cgan", "dcgan", "cdcgan", "resnet"])
def test_an_exported_file_draws_what_ganctl_sample_draws_without_ganctl(runs, tmp_path, ganctl, model, fmt):
    pytest.importorskip("onnxruntime")
    code, out, err = ganctl("export", f"ckpt={runs[model]}", f"format={fmt}", f"out=g.{fmt}", cwd=tmp_path)
    assert code == 0 and "images/s on this CPU" in out and "parameters" in out, err
    G = load(runs[model])
    labels = list(range(G.num_classes)) if G.num_classes else None
    n = 2 * max(G.num_classes, 3)
    assert ganctl("sample", f"ckpt={runs[model]}", f"n={n}", "seed=5", "out=s.npz", cwd=tmp_path)[0] == 0
    expected = np.load(tmp_path / "s.npz")
    per = n // len(labels) if labels else n  # ganctl sample: label-major, the same z for every label
    z = latents(per, G.z_dim, G.noise, 5).repeat(len(labels) if labels else 1, 1)
    feed = {"z": z.numpy(), **({"labels": expected["labels"]} if labels else {})}
    np.savez(tmp_path / "in.npz", **feed)
    r = subprocess.run([sys.executable, "-I", "-c", RUNNER, str(tmp_path / f"g.{fmt}"), fmt, str(tmp_path / "in.npz"),
                        str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result = np.load(tmp_path / "out.npz")
    meta = json.loads(str(result["meta"]))
    assert (meta["z_dim"], meta["num_classes"], meta["img_size"]) == (G.z_dim, G.num_classes, G.img_size)
    assert meta["classes"] == G.classes and meta["ganctl_version"] == __version__
    drawn = np.round((np.clip(result["images"], -1, 1) + 1) * 127.5).astype(np.int16)
    assert np.abs(drawn - expected["images"]).max() <= 1  # float order may move a value across a rounding edge
