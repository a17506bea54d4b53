"""`ganctl export`: a run's generator as one file that runs without ganctl installed.

    ganctl export ckpt=outputs/<day>/<run> format=pt2     # torch.export: torch.export.load(f).module()(z, labels)
    ganctl export format=onnx out=g.onnx                  # ONNX (opset 18) for onnxruntime, the web, engines

The file holds the moving average of G's weights in eval mode. Inputs: `z`, float32 (N, z_dim),
drawn as the run drew them (`noise` in the metadata: normal N(0, 1) or uniform U(-1, 1)), and for
conditional runs `labels`, int64 (N,) class indices; N is free. Output: float32 images (N, C, H, W)
in [-1, 1] (uint8 as `ganctl sample` writes them: round((x + 1) * 127.5)). The run's metadata
(METADATA_KEY: z_dim, noise, classes, image size and channels, ganctl's version, the config's
hash) is embedded: torch.export's extra file, ONNX's metadata_props.
"""
import contextlib
import hashlib
import io
import json
import logging
import time
from pathlib import Path

import torch

import ganctl
from ganctl.api import Generator, unused_name
from ganctl.errors import UserError, one_line

FORMATS = ("pt2", "onnx")
OPSET = 18  # ONNX opset: onnxruntime 1.14+ and onnxruntime-web run it
METADATA_KEY = "ganctl.json"


class Exported(torch.nn.Module):
    """G with the inputs the file takes: z, and labels where the run has classes."""

    def __init__(self, G: torch.nn.Module, conditional: bool):
        super().__init__()
        self.G, self.conditional = G, conditional

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.G(z, labels if self.conditional else None)


def metadata(G: Generator) -> dict:
    return {"ganctl_version": ganctl.__version__, "z_dim": G.z_dim, "noise": G.noise,
            "num_classes": G.num_classes, "classes": G.classes, "img_channels": G.img_channels,
            "img_size": G.img_size, "inputs": ["z", "labels"] if G.num_classes else ["z"],
            "output": "float32 images (N, C, H, W) in [-1, 1]", "step": G.step, "generator": G.which,
            "config_sha256": hashlib.sha256(json.dumps(G.config, sort_keys=True, default=str).encode()).hexdigest()}


def example_inputs(G: Generator, n: int = 2) -> tuple:
    z = torch.randn(n, G.z_dim)
    return (z, torch.arange(n) % G.num_classes) if G.num_classes else (z,)


def batch_dims(inputs: tuple) -> tuple:
    """Every input's first dimension is the batch, free: one file for any N."""
    batch = torch.export.Dim("batch", min=1)
    return tuple({0: batch} for _ in inputs)


def export_pt2(module: Exported, inputs: tuple, meta: dict, out: Path) -> None:
    program = torch.export.export(module, inputs, dynamic_shapes=batch_dims(inputs))
    torch.export.save(program, str(out), extra_files={METADATA_KEY: json.dumps(meta)})


def export_onnx(module: Exported, inputs: tuple, meta: dict, out: Path) -> None:
    try:
        import onnx
    except ImportError:
        raise UserError("format=onnx needs the export extra: pip install -e \".[export]\" (onnx, onnxscript)") from None
    names = ["z", "labels"][:len(inputs)]
    with quiet("onnxscript", "onnx_ir"):
        program = torch.onnx.export(module, inputs, dynamo=True, opset_version=OPSET, input_names=names,
                                    output_names=["images"], dynamic_shapes=batch_dims(inputs), verbose=False)
        model = program.model_proto  # optimised here, on first access
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(model, str(out))


@contextlib.contextmanager
def quiet(*loggers: str):
    """The exporter's progress lines (printed, and logged at INFO by its optimiser) left out."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def images_per_second(out: Path, fmt: str, G: Generator, n: int = 64) -> float:
    """The exported file's CPU speed, loaded back as a user loads it."""
    inputs = example_inputs(G, n)
    if fmt == "pt2":
        run = torch.export.load(str(out)).module()
        call = lambda: run(*inputs)  # noqa: E731
    else:
        import onnxruntime
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        feed = {name: x.numpy() for name, x in zip(("z", "labels"), inputs)}
        call = lambda: session.run(None, feed)  # noqa: E731
    seconds = []
    with torch.no_grad():
        for _ in range(4):  # the first call sets the program up: the best of the rest
            t0 = time.perf_counter()
            call()
            seconds.append(time.perf_counter() - t0)
    return n / min(seconds[1:])


def run_export(cfg) -> Path:
    """The command: write the file, then print its size and speed."""
    if cfg.format not in FORMATS:
        raise UserError(f"format={cfg.format}: choose {' or '.join(FORMATS)}")
    G = Generator(cfg.ckpt, cfg.which, cfg.generator, "cpu", cfg.outputs)
    run_dir = G.path.parent.parent if G.path.parent.name == "checkpoints" else G.path.parent
    out = Path(cfg.out) if cfg.out else unused_name(run_dir / f"generator.{cfg.format}")
    if out.suffix != f".{cfg.format}":
        raise UserError(f"out={out}: a format={cfg.format} file is named *.{cfg.format}")
    module, inputs, meta = Exported(G.module, G.num_classes > 0).eval(), example_inputs(G), metadata(G)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")  # torch.export wants its own suffix
    try:
        (export_pt2 if cfg.format == "pt2" else export_onnx)(module, inputs, meta, tmp)
        tmp.replace(out)
    except UserError:
        raise
    except Exception as e:  # an op the exporter cannot trace: one line, nothing written
        raise UserError(f"the generator of {G.path} cannot be exported as {cfg.format} ({type(e).__name__}: "
                        f"{one_line(e)[:200]})") from None
    finally:
        tmp.unlink(missing_ok=True)
    params = sum(p.numel() for p in G.module.parameters())
    speed = images_per_second(out, cfg.format, G)
    print(f"wrote {out} ({cfg.format}{f', opset {OPSET}' if cfg.format == 'onnx' else ''}): G of {G.path} "
          f"(step {G.step}), {params / 1e6:.2f}M parameters, {out.stat().st_size / 1e6:.1f} MB, "
          f"{speed:,.0f} images/s on this CPU at batch 64; inputs {', '.join(meta['inputs'])}, output "
          f"{meta['output']}")
    return out
