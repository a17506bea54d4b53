"""Training-step speed of ganctl against the plain tutorial loop for the same networks, measured
in the same run on the same device.

    python benchmarks/bench.py                                  # MNIST from $GANCTL_DATA or ./data
    python benchmarks/bench.py --models dcgan --batches 128,1024 --variant "trainer.precision=bf16"

For each model (with BCE, and with WGAN-GP unless --losses says otherwise) and batch size it
times `--steps` training steps (fewer where they would take over `--round-s` seconds) after
`--warmup` steps, synchronising the device around the timed span, in `--rounds` rounds that each
time the reference and then ganctl's step with each `--variant`, and reports the medians. A step
is one G update and n_critic D updates; img/s counts the real images D consumed, so an MNIST
epoch is 60,000 / (img/s) seconds for both loops and every loss. The JSON file is rewritten after
each (model, loss, batch), so a run cut short keeps what it measured.

The reference is the loop the tutorials write: torchvision's MNIST dataset with
Compose([ToTensor(), Normalize((0.5,), (0.5,))]), a DataLoader(batch, shuffle=True,
drop_last=True) with default workers, D ending in nn.Sigmoid() with nn.BCELoss() (WGAN-GP: the
raw critic and the penalty computed the textbook way), noise drawn on the CPU and moved with
.to(device), loss.item() after each D and G update, default Adam without fused or compile. Its
networks are ganctl's own (built from the same config), so only the loop differs.

How close a step gets to the device's arithmetic limit: the matmul and convolution FLOPs of one
ganctl step (by the formulas of torch's FlopCounterMode, counted on an eager copy: forward,
backward and the penalty's double backward; elementwise work is not counted) over its time,
against the peak of a large square matmul timed in the same run, in the dtype the step computes
in (bf16 under trainer.precision=bf16, else fp32 as torch runs convolutions by default: through
TF32 on CUDA).

Writes a JSON file (--out) and prints a Markdown table; docs/benchmarks.md keeps the results.
"""
import argparse
import copy
import datetime
import functools
import json
import math
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from ganctl.cli import registry
from ganctl.config.build import build
from ganctl.data import load_mnist
from ganctl.training.clusters import clustered
from ganctl.training.wiring import (build_discriminator, build_generator, build_loss, build_step, conditioning,
                                    labels_of)
from ganctl.training.runtime import cudnn_autotuner, device_name, resolve_device
from ganctl.training.loop import real_batches

MNIST_TRAIN = 60_000


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compose_cfg(model: str, loss: str, batch: int, root: str, variant: list[str]):
    """The training config of one row (a copy: composing costs ~0.2 s, and main asks twice)."""
    return copy.deepcopy(_composed(model, loss, batch, root, tuple(variant)))


@functools.cache
def _composed(model: str, loss: str, batch: int, root: str, variant: tuple[str, ...]):
    with initialize_config_module("ganctl.conf", version_base="1.3"):
        return compose("train", overrides=[f"model={model}", f"loss={loss}", f"trainer.batch_size={batch}",
                                           f"dataset.root={root}", "dataset.download=false", *variant])


def networks(cfg, device, data_info, loss):
    torch.manual_seed(0)
    G = build_generator(cfg.model, data_info).to(device)
    D = build_discriminator(cfg.model, data_info, per_sample=loss.per_sample_critic,
                            clipped=loss.clipped_critic).to(device)
    return G, D


class Timer:
    """Seconds per call of one loop's step, a round at a time: `warmup` calls before the first
    round (one before each later round), then `steps` timed calls, or fewer where a step is slow:
    as many as fill `budget` seconds (but at least 3), counted once in the first round and kept."""

    def __init__(self, device, warmup: int, steps: int, budget: float | None = None):
        self.device, self.warmup, self.steps, self.budget = device, warmup, steps, budget
        self.n = None

    def __call__(self, fn) -> float:
        for _ in range(self.warmup if self.n is None else 1):
            fn()
        sync(self.device)
        if self.n is None:
            t0 = time.perf_counter()
            fn()
            sync(self.device)
            one = time.perf_counter() - t0
            self.n = self.steps if not self.budget else min(self.steps, max(3, math.ceil(self.budget / one)))
        t0 = time.perf_counter()
        for _ in range(self.n):
            fn()
        sync(self.device)
        return (time.perf_counter() - t0) / self.n


def ganctl_step(cfg, device, data):
    """ganctl's step as `ganctl train` builds and runs it, with its switches: device-resident data,
    noise drawn on the device, the EMA update, no host syncs."""
    tcfg = cfg.trainer
    num_classes = conditioning(cfg.model, data.num_classes, tcfg.batch_size)
    loss = build_loss(cfg, num_classes)
    info = {"img_channels": data.img_channels, "img_size": data.img_size, "num_classes": num_classes}
    if cfg.model.get("clusters"):  # self-conditioning, as `ganctl train` sets it up
        data, info["clusters"] = clustered(data, cfg.model.clusters, tcfg.seed)
    labelled = labels_of(info) > 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=tcfg.precision == "bf16")
    torch.manual_seed(0)
    step, ema = build_step(cfg, info, loss, device, autocast)
    batches = real_batches(data, tcfg.batch_size)
    count = [0]

    def run():
        reals = []
        for _ in range(loss.n_critic):
            _, x, y = next(batches)
            reals.append((x, y if labelled else None))
        step(reals)
        count[0] += 1
        if ema is not None:
            ema.update(step.G, count[0])
    return run, loss.n_critic


class CountFlops(TorchDispatchMode):
    """The FLOPs of every matmul and convolution run inside, by torch.utils.flop_counter's
    formulas. FlopCounterMode itself cannot count a gradient penalty: its module tracking breaks
    torch.autograd.grad (pytorch/pytorch#131753), and nothing here needs per-module counts."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def step_flops(cfg, device, data) -> int:
    """Matmul and convolution FLOPs of one ganctl step as cfg builds it, counted eagerly (a
    compiled step computes the same arithmetic): the D updates and the G update, each forward and
    backward, after one step that is not counted (lazy initialisation)."""
    cfg = copy.deepcopy(cfg)
    cfg.trainer.compile = "none"
    run, _ = ganctl_step(cfg, device, data)
    run()
    with CountFlops() as counter:
        run()
    return counter.total


def matmul_peak(device, dtype, n_max: int, repeats: int) -> tuple[float, int]:
    """(FLOP/s, n) of an n x n by n x n matmul in `dtype`, best of `repeats`: what this device's
    arithmetic reaches when nothing but arithmetic is asked of it. n doubles from 256 up to n_max
    while the next size would take under half a second (bf16 on a CPU without BF16 units runs at
    a thousandth of fp32). fp32 on CUDA as the step's convolutions run it: through TF32 while
    cuDNN allows it (torch's default)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = device.type == "cuda" and torch.backends.cudnn.allow_tf32

    def seconds(a, b) -> float:
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        return time.perf_counter() - t0
    try:
        n = min(256, n_max)
        while True:
            a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
            seconds(a, b)  # warm-up: a dtype's first CUDA matmul also loads its kernels (~0.1 s)
            first = seconds(a, b)
            if n >= n_max or 8 * first > 0.5:
                break
            n *= 2
        best = min(seconds(a, b) for _ in range(repeats))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return 2 * n**3 / best, n


class WithSigmoid(nn.Module):
    """The tutorial D: the network's logit through nn.Sigmoid(), for nn.BCELoss()."""

    def __init__(self, D):
        super().__init__()
        self.D, self.sigmoid = D, nn.Sigmoid()

    def forward(self, x, y=None):
        return self.sigmoid(self.D(x, y))


def reference_step(cfg, device, root: str):
    """The tutorial loop, one step per call."""
    import torchvision
    from torch.utils.data import DataLoader
    from torchvision import transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    dataset = torchvision.datasets.MNIST(root, train=True, download=False, transform=transform)
    if len(dataset) < cfg.trainer.batch_size:
        raise SystemExit(f"bench: {len(dataset)} training images, fewer than a batch of {cfg.trainer.batch_size}")
    loader = DataLoader(dataset, batch_size=cfg.trainer.batch_size, shuffle=True, drop_last=True)
    conditional, z_dim = cfg.model.conditional, cfg.model.z_dim
    info = {"img_channels": 1, "img_size": 28, "num_classes": 10 if conditional else 0}
    loss = build(cfg.loss, "loss", label_smoothing=0.0, aux_weight=0.0)  # the tutorial's: no AC-GAN head
    G, D = networks(cfg, device, info, loss)
    wgan_gp = type(loss).__name__ == "WGANGP"
    n_critic = loss.n_critic if wgan_gp else 1
    critic = D if wgan_gp else WithSigmoid(D)
    criterion = nn.BCELoss()
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def batches():
        while True:
            yield from loader
    data = batches()

    def run():
        for _ in range(n_critic):
            real, labels = next(data)
            real = real.to(device)
            y = labels.to(device) if conditional else None
            b = real.size(0)
            noise = torch.randn(b, z_dim).to(device)
            fake = G(noise, y)
            opt_D.zero_grad()
            if wgan_gp:
                eps = torch.rand(b, 1, 1, 1).to(device)
                x_hat = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
                grad = torch.autograd.grad(critic(x_hat, y).sum(), x_hat, create_graph=True)[0]
                gp = ((grad.view(b, -1).norm(2, dim=1) - 1) ** 2).mean()
                loss_D = critic(fake.detach(), y).mean() - critic(real, y).mean() + 10 * gp
            else:
                loss_D = (criterion(critic(real, y), torch.ones(b).to(device))
                          + criterion(critic(fake.detach(), y), torch.zeros(b).to(device)))
            loss_D.backward()
            opt_D.step()
            loss_D.item()
        opt_G.zero_grad()
        out = critic(fake, y)
        loss_G = -out.mean() if wgan_gp else criterion(out, torch.ones(b).to(device))
        loss_G.backward()
        opt_G.step()
        loss_G.item()
    return run, n_critic


def compute_dtype(cfg) -> str:
    """The dtype a step's matmuls and convolutions run in, as a torch attribute name."""
    return "bfloat16" if cfg.trainer.precision == "bf16" else "float32"


def measure(model, loss, batch, args, device, variants, peaks: dict) -> list[dict]:
    """A row for each variant of ganctl's step at (model, loss, batch), against the reference loop
    timed once for all of them: each round times the reference, then each variant in turn, so
    drift of the machine hits all alike."""
    cfgs = [compose_cfg(model, loss, batch, args.data, [f"trainer.device={device}", *v]) for v in variants]
    data = load_mnist(args.data, download=False, split="train", device=device)
    reference, n_critic = reference_step(cfgs[0], device, args.data)
    loops = {"reference": reference}
    failed = {}  # variant index -> the error that stopped it: the other rows still get measured
    for i, cfg in enumerate(cfgs):
        try:
            loops[i] = ganctl_step(cfg, device, data)[0]
        except Exception as e:
            failed[i] = one_line(e)
    timers = {name: Timer(device, args.warmup, args.steps, args.round_s) for name in loops}
    seconds, peak = {name: [] for name in loops}, dict.fromkeys(loops, 0)
    cuda = device.type == "cuda"
    for _ in range(args.rounds):
        for name, fn in loops.items():
            if name in failed:
                continue
            # As each loop runs it: ganctl train as its config says, the tutorials leave it off.
            torch.backends.cudnn.benchmark = (name != "reference"
                                              and cudnn_autotuner(device, cfgs[name].trainer.deterministic))
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            try:
                seconds[name].append(timers[name](fn))
            except Exception as e:
                if name == "reference":
                    raise
                failed[name] = one_line(e)
                continue
            if cuda:  # all that is allocated while this loop steps: every loop's weights, MNIST on the device
                peak[name] = max(peak[name], torch.cuda.max_memory_allocated(device))
    ref, images = statistics.median(seconds["reference"]), n_critic * batch
    rows = []
    for i, (cfg, variant) in enumerate(zip(cfgs, variants)):
        if i in failed:
            rows.append({"model": model, "loss": loss, "batch": batch, "variant": " ".join(variant),
                         "error": failed[i]})
            continue
        ours = statistics.median(seconds[i])
        flops = step_flops(cfg, device, data)
        dtype = compute_dtype(cfg)
        row = {"model": model, "loss": loss, "batch": batch, "variant": " ".join(variant),
               "ganctl_ms_per_step": 1e3 * ours, "reference_ms_per_step": 1e3 * ref,
               "ganctl_img_per_s": images / ours, "reference_img_per_s": images / ref,
               "ganctl_epoch_s": MNIST_TRAIN / (images / ours), "reference_epoch_s": MNIST_TRAIN / (images / ref),
               "speedup": ref / ours, "flops_per_step": flops, "ganctl_tflops": flops / ours / 1e12,
               "peak_fraction": flops / ours / peaks[dtype], "compute_dtype": dtype,
               "steps_timed": {"ganctl": timers[i].n, "reference": timers["reference"].n},
               "rounds_ms": {"ganctl": [1e3 * t for t in seconds[i]],
                             "reference": [1e3 * t for t in seconds["reference"]]}}
        if cuda:
            row["peak_memory_mib"] = {"ganctl": peak[i] / 2**20, "reference": peak["reference"] / 2**20}
        rows.append(row)
    return rows


def one_line(e: Exception) -> str:
    """An exception as its type and the first line of its message (inductor's run to dozens)."""
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"


def markdown(rows) -> str:
    head = ("| model | loss | batch | variant | ganctl ms/step | reference ms/step | ganctl img/s | "
            "epoch s (ganctl / ref) | speedup | ganctl TFLOP/s (of matmul peak) | peak MiB (ganctl / ref) |")
    lines = [head, "|" + " --- |" * 11]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['loss']} | {r['batch']} | {r['variant'] or '-'} | failed: "
                         f"{r['error'].replace('|', '/')} |" + " |" * 6)
            continue
        memory = r.get("peak_memory_mib")
        memory = f"{memory['ganctl']:.0f} / {memory['reference']:.0f}" if memory else "-"
        lines.append(f"| {r['model']} | {r['loss']} | {r['batch']} | {r['variant'] or '-'} | "
                     f"{r['ganctl_ms_per_step']:.1f} | {r['reference_ms_per_step']:.1f} | "
                     f"{r['ganctl_img_per_s']:.0f} | {r['ganctl_epoch_s']:.1f} / {r['reference_epoch_s']:.1f} | "
                     f"{r['speedup']:.2f}x | {r['ganctl_tflops']:.3g} ({100 * r['peak_fraction']:.1f}%) | {memory} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("GANCTL_DATA", "data"), help="root holding MNIST/raw")
    p.add_argument("--device", default="auto")
    p.add_argument("--models", default="gan,cgan,dcgan,cdcgan")
    p.add_argument("--losses", default="bce,wgan_gp")
    p.add_argument("--batches", default=None, help="comma list; default 128 (CPU) or 128,1024 (CUDA)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (default 20 CPU, 200 CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3 CPU, 30 CUDA)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--round-s", type=float, default=None,
                   help="time fewer than --steps steps where they would take longer than this many seconds "
                        "(default 2 on CUDA, unbounded on the CPU)")
    p.add_argument("--variant", action="append", default=[],
                   help="ganctl overrides for an extra row, e.g. 'trainer.precision=bf16' (repeatable)")
    p.add_argument("--matmul-size", type=int, default=None,
                   help="largest side of the square matmul that sets the arithmetic peak (default 2048 CPU, 8192 CUDA)")
    p.add_argument("--out", default=None, help="JSON file (default benchmarks/results/<device>-<date>.json)")
    args = p.parse_args(argv)
    registry.register()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    args.steps = args.steps or (200 if cuda else 20)
    args.warmup = args.warmup or (30 if cuda else 3)
    args.round_s = args.round_s or (2.0 if cuda else None)
    batches = [int(b) for b in (args.batches or ("128,1024" if cuda else "128")).split(",")]
    if not cuda:
        torch.set_num_threads(os.cpu_count() or 1)
    name = device_name(device)
    variants = [[]] + [v.split() for v in args.variant]
    n_max = args.matmul_size or (8192 if cuda else 2048)
    models, losses = args.models.split(","), args.losses.split(",")
    dtypes = sorted({compute_dtype(compose_cfg(models[0], losses[0], batches[0], args.data,
                                                  [f"trainer.device={device}", *v])) for v in variants},
                    reverse=True)  # float32 first
    measured = {dtype: matmul_peak(device, getattr(torch, dtype), n_max, repeats=20 if cuda else 3) for dtype in dtypes}
    peaks = {dtype: flops for dtype, (flops, _) in measured.items()}
    print(f"{name}: matmul peak " + ", ".join(f"{dtype} {flops / 1e12:.3g} TFLOP/s ({n} x {n})"
                                              for dtype, (flops, n) in measured.items()), flush=True)
    result = {"device": name, "torch": torch.__version__, "date": datetime.date.today().isoformat(),
              "command": "python " + shlex.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
              "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "round_s": args.round_s,
              "cuda_tf32": cuda and torch.backends.cudnn.allow_tf32,
              "matmul_peak_tflops": {dtype: flops / 1e12 for dtype, (flops, _) in measured.items()},
              "matmul_size": {dtype: n for dtype, (_, n) in measured.items()}, "rows": []}
    out = Path(args.out or f"benchmarks/results/{'cuda' if cuda else 'cpu'}-{result['date']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    for model in models:
        for batch in batches:  # batch 128 of every loss first: the targets, should time run out
            for loss in losses:
                for row in measure(model, loss, batch, args, device, variants, peaks):
                    result["rows"].append(row)
                    label = f"{model:7s} {loss:8s} batch {batch:5d} {row['variant'] or '-':28s}"
                    if "error" in row:
                        print(f"{label} failed: {row['error']}", flush=True)
                        continue
                    print(f"{label} ganctl {row['ganctl_ms_per_step']:8.1f} ms  reference {row['reference_ms_per_step']:8.1f} ms  "
                          f"speedup {row['speedup']:.2f}x  {row['ganctl_tflops']:.3g} TFLOP/s", flush=True)
                out.write_text(json.dumps(result, indent=1) + "\n")  # after each group: a timeout keeps the rest
    print(f"\n{name}, torch {torch.__version__}, {result['date']}\n\n{markdown(result['rows'])}\n\nwrote {out}")


if __name__ == "__main__":
    main()
