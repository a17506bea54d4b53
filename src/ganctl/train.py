"""The training loop: `train(cfg, run_dir) -> dict` of final metrics.

    ganctl train model=cdcgan loss=wgan_gp        # the CLI composes cfg and calls train()

A step is one generator update after `loss.n_critic` discriminator updates, each on a fresh real
batch. Scalars stay on the device and are read every `trainer.log_every` steps, the only host
syncs of the loop besides sample grids and checkpoints.

Under torchrun (W processes) G and D are wrapped in DistributedDataParallel, each rank takes its
block of every global batch of B*W and the slice of the global batch's noise, and rank 0 alone
writes; the ranks draw identical random streams, so rank 0's checkpoint resumes all of them.
"""
import copy
import logging
import math
import os
import random
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid, save_image
from tqdm import tqdm

from ganctl import config, distributed, rundir
from ganctl.build import build, resolve_target
from ganctl.checkpoint import all_finite, load_checkpoint, prune_checkpoints, save_checkpoint, save_copy
from ganctl.errors import Aborted, Interrupted, UserError
from ganctl.nets.layers import dcgan_init
from ganctl.report import JsonLines, write_curves, write_progress_gif
from ganctl.step import TrainStep, compiled, sample_noise

log = logging.getLogger(__name__)


def resolve_device(name: str, local_rank: int = 0, key: str = "trainer.device") -> torch.device:
    """`auto` is cuda where available; under torchrun each rank takes the GPU of its local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"{key}={name} is not a device: use auto, cpu, cuda, cuda:<index> or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key}={name} but CUDA is not available here; use {key}=cpu or auto")
    if device.type == "cuda" and distributed.launched():
        device = torch.device("cuda", local_rank)
    return device


def cudnn_autotuner(device: torch.device, tcfg) -> bool:
    """Whether a run lets cuDNN time its algorithms (cudnn.benchmark): on CUDA, unless
    trainer.deterministic asks for repeatable runs."""
    return device.type == "cuda" and not tcfg.deterministic


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # every device's default generator


def build_generator(model_cfg, data_info: dict) -> torch.nn.Module:
    G = build(model_cfg.G, "model.G", **data_info)
    if model_cfg.init == "dcgan":
        dcgan_init(G)
    return G


def build_discriminator(model_cfg, data_info: dict, per_sample: bool, clipped: bool = False,
                        aux: bool = False) -> torch.nn.Module:
    """`per_sample`: the loss penalises per-sample gradients, so BatchNorm (which mixes the samples
    of a batch) must not be used; `clipped`: the loss clips D's weights. model.D.norm=auto lets
    the network pick its norm for these (its `auto_norm`)."""
    kwargs = {k: v for k, v in data_info.items() if k != "z_dim"}
    if "norm" in model_cfg.D:
        norm = model_cfg.D.norm
        if norm == "auto":
            norm = resolve_target(model_cfg.D._target_, "model.D").auto_norm(per_sample, clipped)
        elif norm == "batch" and per_sample:
            log.warning("model.D.norm=batch with a gradient penalty: the penalty is per sample and "
                        "BatchNorm mixes samples; model.D.norm=auto picks a per-sample norm")
        kwargs["norm"] = norm
    if model_cfg.D.get("mbstd") and per_sample:
        log.warning("model.D.mbstd is off: it mixes the samples of a batch, and the loss's "
                    "gradient penalty is per sample")
        kwargs["mbstd"] = False
    if model_cfg.D.get("pack", 1) > 1 and per_sample:
        log.warning("model.D.pack is off: the loss's gradient penalty is per sample, not per pack")
        kwargs["pack"] = 1
    if aux:
        kwargs["aux"] = True
    if aux and model_cfg.G.get("codes"):  # InfoGAN: D reads G's code back
        kwargs["codes"] = model_cfg.G.codes
    D = build(model_cfg.D, "model.D", **kwargs)
    if model_cfg.init == "dcgan":
        dcgan_init(D)
    return D


def fixed_inputs(z_dim: int, num_classes: int, noise: str, seed: int, device, codes: int = 0):
    """The noise (and labels) of every sample grid: one row per class for conditional models,
    the same z along each column, so grids are comparable across steps and classes. With
    InfoGAN codes, one row per code: each z's largest code entry is swapped into the row's place
    (a permutation of i.i.d. entries, so z keeps its distribution given the code)."""
    g = torch.Generator().manual_seed(seed)
    rows = num_classes or codes
    if rows > 0:
        per_row = 10
        z = sample_noise(per_row, z_dim, noise, "cpu", g).repeat(rows, 1)
        row = torch.arange(rows).repeat_interleave(per_row)  # each sample's row: its label or code
        if num_classes > 0:
            return z.to(device), row.to(device), per_row
        every, top = torch.arange(len(z)), z[:, :codes].argmax(1)
        z[every, top], z[every, row] = z[every, row], z[every, top]
        return z.to(device), None, per_row
    return sample_noise(64, z_dim, noise, "cpu", g).to(device), None, 8


@torch.no_grad()
def ema_update(G_ema: torch.nn.Module, G: torch.nn.Module, decay: float, buffers: bool = True) -> None:
    """G_ema <- decay * G_ema + (1 - decay) * G for parameters; buffers (BatchNorm statistics) copied
    unless buffers=False, where standing_stats recomputes them before each use of G_ema."""
    torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1.0 - decay)
    if buffers:
        for b_ema, b in zip(G_ema.buffers(), G.buffers()):
            b_ema.copy_(b)


@torch.no_grad()
def standing_stats(G: torch.nn.Module, batches: int, batch_size: int, z_dim: int, noise: str,
                   num_classes: int, device, seed: int = 0) -> None:
    """BigGAN's standing statistics (Brock et al. 2019): G's BatchNorm running statistics become the
    average over `batches` batches of G's own activations, from fixed noise. ema_update copies the
    raw G's statistics, which belong to other weights: where G moves fast (the MLP models, Adam
    without momentum) the average then normalises with the wrong mean and scale. G ends in eval mode."""
    norms = [m for m in G.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or batches < 1:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    g = torch.Generator(device=device).manual_seed(seed)
    G.train()
    for _ in range(batches):
        z = sample_noise(batch_size, z_dim, noise, device, g)
        y = torch.randint(num_classes, (batch_size,), device=device, generator=g) if num_classes else None
        G(z, y)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    G.eval()


def ema_decay_at(step: int, decay: float, warmup: bool) -> float:
    """With warm-up the average forgets the first, poor weights quickly: min(decay, (1+t)/(10+t))."""
    return min(decay, (1 + step) / (10 + step)) if warmup else decay


def ema_after_step(G_ema: torch.nn.Module, G: torch.nn.Module, step: int, tcfg) -> None:
    """The EMA update after training step `step`. G's BatchNorm statistics are copied only with
    trainer.ema_bn_batches=0; otherwise standing_stats computes G_ema's own before each use."""
    ema_update(G_ema, G, ema_decay_at(step, tcfg.ema_decay, tcfg.ema_warmup), buffers=not tcfg.ema_bn_batches)


class Meter:
    """Sums of scalar tensors kept on the device; `read()` syncs once for all of them."""

    def __init__(self):
        self.sums, self.counts = {}, {}

    def add(self, stats: dict) -> None:
        for k, v in stats.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + 1

    def read(self) -> dict:
        """Means since the last read, over all ranks (every rank gets the same numbers)."""
        if not self.sums:
            return {}
        values = distributed.mean_over_ranks(torch.stack(list(self.sums.values()))).tolist()
        means = {k: v / self.counts[k] for k, v in zip(self.sums, values)}
        self.sums, self.counts = {}, {}
        return means


def flat_items(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}"""
    out = {}
    for k, v in d.items():
        out.update(flat_items(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def config_changes(saved: dict, current: dict) -> list[str]:
    """`key: old -> new` for every key that differs, `resume` aside."""
    a, b = flat_items(saved), flat_items(current)
    return [f"{k}: {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b))
            if k != "resume" and a.get(k) != b.get(k)]


def restore(state: dict, path: Path, model_name: str, modules: dict) -> None:
    """Load each state_dict into its module or optimizer; a mismatch is one line naming both models."""
    for name, module in modules.items():
        if module is None:
            continue
        try:
            module.load_state_dict(state[name])
        except (KeyError, RuntimeError, ValueError) as e:
            saved = state["cfg"].get("model", {}).get("name", "?")
            raise UserError(f"{path} holds {name} of model={saved}, which does not fit model={model_name} "
                            f"({type(e).__name__}: {str(e).strip().splitlines()[0][:120]})") from None


class StopSignals:
    """SIGINT/SIGTERM set a flag that the loop reads after each step, so the step in flight
    finishes and a checkpoint is written before the run stops."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # signal() works only there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signum = signum

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def rng_untouched(device):
    """Evaluation draws its own random numbers (a classifier's init, subsets): the training RNG
    stream must come out as it went in, or a run would depend on its eval settings and cache."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def make_evaluator(cfg, device):
    """The quick eval's Evaluator, or None (with a warning) where the dataset cannot have one."""
    from ganctl.evaluate import Evaluator  # torchmetrics: imported only where eval is on
    try:
        with rng_untouched(device):
            return Evaluator(cfg.dataset, device, cfg.eval.backbone, cfg.eval.inception_weights)
    except UserError as e:
        log.warning("quick eval is off: %s", e)
        return None


def wrap_ddp(module: torch.nn.Module, device, sync_bn: bool) -> torch.nn.Module:
    """DistributedDataParallel around `module` (which stays the one that is saved)."""
    if sync_bn:
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def build_loss(cfg, num_classes: int):
    """The loss with trainer.label_smoothing and, for models with labels or codes, model.aux_weight."""
    heads = num_classes or cfg.model.G.get("codes", 0)
    loss = build(cfg.loss, "loss", label_smoothing=cfg.trainer.label_smoothing,
                 aux_weight=cfg.model.aux_weight if heads else 0.0)
    if cfg.model.aux_weight and not heads:
        log.warning("model.aux_weight has no effect on model=%s (it has no labels or codes)", cfg.model.name)
    if cfg.trainer.label_smoothing and not loss.uses_targets:
        log.warning("trainer.label_smoothing has no effect on %s (it has no targets)", type(loss).__name__)
    return loss


def build_step(cfg, data_info: dict, loss, device, autocast=None,
               ranks: distributed.Ranks = distributed.Ranks()) -> tuple[TrainStep, torch.nn.Module | None]:
    """The TrainStep that `ganctl train` (and the benchmark) runs, and the EMA copy of G (None with
    trainer.ema_decay=0): G and D built on `device`, in channels_last, wrapped in DDP under torchrun
    and compiled as trainer.* asks, with their optimizers. step.G, step.D are the modules saved."""
    tcfg = cfg.trainer
    G = build_generator(cfg.model, data_info).to(device)
    D = build_discriminator(cfg.model, data_info, per_sample=loss.per_sample_critic,
                            clipped=loss.clipped_critic, aux=loss.aux_weight > 0).to(device)
    if tcfg.channels_last:  # before anything copies, wraps or optimises them
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    # An exponential moving average of G's weights draws the sample grids and is what
    # `ganctl sample` uses: it is smoother than G's last iterate (Yazici et al. 2019).
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if tcfg.ema_decay > 0 else None
    # Under torchrun the D update drives DDP wrappers; G, D stay the modules that are saved.
    W = ranks.world_size
    G_train, D_train = (wrap_ddp(G, device, tcfg.sync_bn), wrap_ddp(D, device, tcfg.sync_bn)) if W > 1 else (G, D)
    G, D = getattr(G_train, "module", G), getattr(D_train, "module", D)
    opt_G = build(cfg.optimizer.G, "optimizer")(G.parameters())
    opt_D = build(cfg.optimizer.D, "optimizer")(D.parameters())
    G_train, D_train, D_g = compiled(G_train, D_train, D, tcfg.compile, loss.per_sample_critic)
    step = TrainStep(G, D, opt_G, opt_D, loss, z_dim=cfg.model.z_dim, noise=tcfg.noise,
                     batch_size=tcfg.batch_size, autocast=autocast, G_train=G_train, D_train=D_train,
                     D_g=D_g, channels_last=tcfg.channels_last, cudagraphs=tcfg.compile == "reduce-overhead",
                     rank=ranks.rank, world_size=W)
    return step, G_ema


def real_batches(data, batch_size: int, start_batch: int = 0):
    """Endless (epoch, x, y) over epochs, starting at the global batch index `start_batch`."""
    per_epoch = data.batches_per_epoch(batch_size)
    epoch, i = divmod(start_batch, per_epoch)
    while True:
        for x, y in data.epoch(epoch, batch_size, start=i):
            yield epoch, x, y
        epoch, i = epoch + 1, 0


def train(cfg: DictConfig, run_dir: Path, started: float | None = None) -> dict:
    """Train as `cfg` says, writing into `run_dir`; the final metrics. `started`: when the job
    began (time.perf_counter()), for the start-up time it reports; default now. The run directory
    is locked for the run's life (rank 0 holds it under torchrun): a second writer is refused."""
    ranks = distributed.init()
    with rundir.lock(run_dir) if ranks.is_main else rundir.nothing():
        return _train(cfg, Path(run_dir), ranks, time.perf_counter() if started is None else started)


def _train(cfg: DictConfig, run_dir: Path, ranks: distributed.Ranks, started: float) -> dict:
    tcfg = cfg.trainer
    ckpt_dir, sample_dir = run_dir / "checkpoints", run_dir / "samples"
    resume = bool(cfg.get("resume"))
    if ranks.is_main and not resume:
        rundir.refuse_existing_run(run_dir)
    if ranks.is_main and rundir.remove_temporary_files(ckpt_dir):  # left by a writer that was killed
        log.info("removed half-written checkpoint files in %s", ckpt_dir)

    errors = config.range_errors(cfg)
    if errors:
        raise UserError("; ".join(errors))

    # Device, ranks and seeds.
    W = ranks.world_size
    device = resolve_device(tcfg.device, ranks.local_rank)
    if tcfg.sync_bn and W > 1 and device.type != "cuda":
        raise UserError("trainer.sync_bn=true needs CUDA devices (SyncBatchNorm has no CPU kernel)")
    seed_everything(tcfg.seed)
    if tcfg.deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; cudnn.benchmark would pick
        # algorithms by timing. Ops without a deterministic CUDA kernel then raise, by design.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = cudnn_autotuner(device, tcfg)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=tcfg.precision == "bf16")

    # Load training set.
    data = build(cfg.dataset, "dataset", device=device, seed=tcfg.seed, rank=ranks.rank, world_size=W)
    num_classes = data.num_classes if cfg.model.conditional else 0
    if cfg.model.conditional and data.num_classes < 2:
        raise UserError(f"model={cfg.model.name} is conditional but the dataset has "
                        f"{data.num_classes} class; use an unconditional model")
    data_info = {"img_channels": data.img_channels, "img_size": data.img_size, "num_classes": num_classes}
    B = tcfg.batch_size
    if cfg.model.G.get("codes") and num_classes:
        raise UserError(f"model.G.codes={cfg.model.G.codes} needs an unconditional model (InfoGAN's codes "
                        f"stand in for labels); got model={cfg.model.name}")
    pack = cfg.model.D.get("pack", 1)
    if pack > 1 and (num_classes or B % pack):
        raise UserError(f"model.D.pack={pack} needs an unconditional model and a trainer.batch_size that "
                        f"it divides; got model={cfg.model.name}, trainer.batch_size={B}")
    per_epoch = data.batches_per_epoch(B)
    if per_epoch == 0:
        raise UserError(f"trainer.batch_size={B} is larger than the dataset ({len(data)} images)"
                        + (f" for {W} processes" if W > 1 else ""))
    log.info("data: %d images of %dx%dx%d, %d classes, %d batches of %d per epoch", len(data),
             data.img_size, data.img_size, data.img_channels, data.num_classes, per_epoch, B * W)
    if W > 1:
        log.info("data parallel: %d processes (%s), batch %d each", W, torch.distributed.get_backend(), B)

    # Construct networks, loss and optimizers.
    loss = build_loss(cfg, num_classes)
    train_step, G_ema = build_step(cfg, data_info, loss, device, autocast, ranks)
    G, D, opt_G, opt_D = train_step.G, train_step.D, train_step.opt_G, train_step.opt_D
    z_dim, noise_kind = cfg.model.z_dim, tcfg.noise
    log.info("G: %.2fM parameters, D: %.2fM parameters, device %s",
             sum(p.numel() for p in G.parameters()) / 1e6,
             sum(p.numel() for p in D.parameters()) / 1e6, device)

    # Schedule and outputs.
    max_steps = tcfg.max_steps or max(1, tcfg.epochs * per_epoch // loss.n_critic)
    fixed_z, fixed_y, grid_nrow = fixed_inputs(z_dim, num_classes, noise_kind, tcfg.seed, device,
                                               codes=cfg.model.G.get("codes", 0))
    cfg_dict = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)

    # Resume: every state as it was after the checkpoint's step, the RNG included, so the run
    # goes on exactly as if it had never stopped; the data position follows from the batch count.
    start_step, start_batch, epoch = 0, 0, 0
    if resume:
        path = ckpt_dir / "last.pt"
        state = load_checkpoint(path, map_location=device)
        changes = config_changes(state["cfg"], cfg_dict)
        if state.get("world_size", 1) != W:  # the same batch index then names other images
            changes.append(f"processes: {state.get('world_size', 1)} -> {W}")
        if changes:
            log.warning("resuming with a config that differs from the saved run: %s", "; ".join(changes))
        restore(state, path, cfg.model.name, {"G": G, "D": D, "G_ema": G_ema, "opt_G": opt_G, "opt_D": opt_D})
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if device.type == "cuda" and state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
        # The saved batch count, not step * n_critic: n_critic may differ on this command line.
        start_step, start_batch, epoch = state["step"], state["batch"], state["epoch"]
        log.info("resumed %s at step %d (epoch %d)", path, start_step, epoch)
        if start_step >= max_steps:
            log.info("nothing to do: the run is at step %d of %d (raise trainer.max_steps to go on)",
                     start_step, max_steps)
            return {"step": start_step}
    best = state.get("best", {}) if resume else {}  # {"fid": value, "step": step} of best.pt
    # purge_step drops TensorBoard points written after the checkpoint by the stopped run; the
    # JSON-lines logs are cut the same way.
    # Rank 0 alone writes, evaluates and shows progress.
    main = ranks.is_main
    if main:
        writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1 if resume else None)
        train_log, eval_log = JsonLines(run_dir / "metrics.jsonl"), JsonLines(run_dir / "eval.jsonl")
        if resume:
            train_log.truncate_after(start_step)
            eval_log.truncate_after(start_step)
    # The evaluator (a feature classifier, the real data's features) is built at the first eval.
    evaluator, eval_on = None, bool(tcfg.eval_every) and main

    ema_stats_step = None  # the step whose G_ema weights its BatchNorm statistics belong to

    def averaged_G(step: int) -> torch.nn.Module:
        """G_ema with BatchNorm statistics of its own weights (computed once per step)."""
        nonlocal ema_stats_step
        if ema_stats_step != step:
            standing_stats(G_ema, tcfg.ema_bn_batches, B, z_dim, noise_kind, num_classes, device, tcfg.seed)
            ema_stats_step = step
        return G_ema

    def save_samples(step: int) -> None:
        G_show = averaged_G(step) if G_ema is not None else G.eval()
        with torch.no_grad(), autocast:
            images = G_show(fixed_z, fixed_y).float()
        G.train()
        grid = make_grid(images, nrow=grid_nrow, normalize=True, value_range=(-1, 1))
        sample_dir.mkdir(parents=True, exist_ok=True)
        save_image(grid, sample_dir / f"step_{step}.png")
        writer.add_image("samples", grid, step)

    def check_finite(step: int, metrics: dict) -> None:
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:  # stop before any diverged weights are written over a good checkpoint
            raise UserError(f"training diverged by step {step}: {', '.join(bad)} is not finite; "
                            f"the last good checkpoint in {ckpt_dir} is untouched")

    def check_weights(step: int) -> None:
        """Before an eval counts or a checkpoint is written: NaN weights draw black images that
        can score a finite FID, and must never become best.pt or last.pt."""
        if not all_finite(G, D, G_ema):
            raise UserError(f"training diverged by step {step}: the weights are not finite; "
                            f"the last good checkpoint in {ckpt_dir} is untouched")

    def quick_eval(step: int) -> dict:
        """A few thousand samples of the EMA generator against the real features: Eval/* scalars,
        a line of eval.jsonl, and checkpoints/best.pt when FID improves."""
        from ganctl.evaluate import scalars
        nonlocal evaluator, eval_on
        t0 = time.perf_counter()
        if evaluator is None:
            evaluator = make_evaluator(cfg, device)
            wall["eval_setup"] = time.perf_counter() - t0
            if evaluator is None:  # this dataset cannot have one (make_evaluator said why)
                eval_on = False
                return {}
        with rng_untouched(device):
            G_eval = averaged_G(step) if G_ema is not None else G
            result = evaluator.evaluate(G_eval, num_classes, z_dim, noise_kind, n=tcfg.eval_n, seed=tcfg.seed,
                                        full=False, abort=lambda: W == 1 and stop.signum is not None)
        values = scalars(result)
        for k, v in values.items():
            writer.add_scalar(f"Eval/{k}", v, step)
        eval_log.append({"step": step, **values})
        log.info("step %d eval: %s", step, ", ".join(f"{k} {values[k]:.4g}" for k in
                                                      ("fid", "fid_ratio", "precision", "recall", "label_acc")
                                                      if k in values))
        if not best or values["fid"] < best["fid"]:
            best.update(fid=values["fid"], step=step)
            save_checkpoint(checkpoint_state(step, epoch), ckpt_dir / "best.pt")
        wall["eval"] += time.perf_counter() - t0
        return {f"Eval/{k}": v for k, v in values.items()}

    def checkpoint_state(step: int, epoch: int) -> dict:
        return {"G": G.state_dict(), "D": D.state_dict(),
                 **({"G_ema": averaged_G(step).state_dict()} if G_ema is not None else {}),
                 "opt_G": opt_G.state_dict(),
                 "opt_D": opt_D.state_dict(), "step": step, "epoch": epoch,
                 "batch": start_batch + (step - start_step) * loss.n_critic,  # real batches D has seen
                 "world_size": W, "rng": {"torch": torch.get_rng_state(),
                         "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []},
                 "data": data_info, "cfg": cfg_dict, "best": dict(best)}

    def save(step: int, epoch: int) -> None:
        if W > 1:  # a collective: every rank takes part, rank 0 writes
            differ = {name: distributed.replicas_differ(m) for name, m in (("G", G), ("D", D))}
            if any(differ.values()):
                raise RuntimeError(f"DDP replicas diverged by step {step}: {differ} parameters differ")
            log.info("step %d: G and D identical on all %d ranks", step, W)
        if not main:
            return
        # last.pt first, so that a run always has one; step_N.pt is the same file (a hard link).
        save_checkpoint(checkpoint_state(step, epoch), ckpt_dir / "last.pt")
        if tcfg.keep_ckpts:
            save_copy(ckpt_dir / "last.pt", ckpt_dir / f"step_{step}.pt")
        prune_checkpoints(ckpt_dir, tcfg.keep_ckpts)

    # Training loop.
    meter, metrics, eval_metrics = Meter(), {}, {}
    batches = real_batches(data, B, start_batch=start_batch)
    t_loop = t_last = time.perf_counter()
    step_last = start_step
    wall = {"startup": t_loop - started, "eval": 0.0, "eval_setup": 0.0}  # seconds
    # A progress bar on a terminal; elsewhere (a log file, a cluster's output) a line per log step.
    show_bar = tcfg.progress and main and sys.stderr.isatty()
    bar = tqdm(total=max_steps, initial=start_step, desc="train", disable=not show_bar, dynamic_ncols=True)

    stop = StopSignals()
    try:
        stop.install()
        for step in range(start_step + 1, max_steps + 1):
            reals = []
            for _ in range(loss.n_critic):  # each D update takes a fresh real batch
                epoch, real, y = next(batches)
                reals.append((real, y if num_classes else None))
            for stats in train_step(reals):
                meter.add(stats)
            if G_ema is not None:
                ema_after_step(G_ema, G, step, tcfg)
            bar.update(1)

            # Log, sample, checkpoint. Ranks agree on stopping at log steps (one process: at once).
            log_step = step % tcfg.log_every == 0
            stopping = (distributed.any_rank(stop.signum is not None, device) if log_step
                        else stop.signum is not None and W == 1)
            last = step == max_steps or stopping
            if log_step or step % tcfg.ckpt_every == 0 or last:
                metrics = meter.read()
                now = time.perf_counter()
                metrics["Time/img_per_s"] = (step - step_last) * loss.n_critic * B * W / (now - t_last)
                t_last, step_last = now, step
                if main:
                    for k, v in metrics.items():
                        writer.add_scalar(k, v, step)
                    train_log.append({"step": step, **metrics})
                    losses = {k: f"{v:.3g}" for k, v in metrics.items() if k.startswith("Loss/")}
                    bar.set_postfix(losses)
                    if not show_bar and tcfg.progress:
                        log.info("step %d/%d: %s, %.0f img/s", step, max_steps,
                                 ", ".join(f"{k} {v}" for k, v in losses.items()), metrics["Time/img_per_s"])
                check_finite(step, metrics)  # a checkpoint step always logs first, so this guards it
            evaluating = eval_on and (step % tcfg.eval_every == 0 or step == max_steps)
            sampling = main and (step % tcfg.sample_every == 0 or last)
            saving = step % tcfg.ckpt_every == 0 or last
            if saving or last or step % tcfg.sample_every == 0 or (tcfg.eval_every and step % tcfg.eval_every == 0):
                check_weights(step)  # on every rank at the same steps, so that all stop together
            if evaluating:
                try:
                    eval_metrics = quick_eval(step)
                except Aborted:  # a signal came during the eval (one process): save and stop without it
                    log.info("step %d: quick eval left unfinished (%s)", step, signal.Signals(stop.signum).name)
                    stopping = saving = True
            if sampling:
                save_samples(step)
            if saving:
                save(step, epoch)
            if stopping:
                name = signal.Signals(stop.signum or signal.SIGTERM).name
                launcher = f"torchrun --nproc_per_node={W} -m " if W > 1 else ""
                raise Interrupted(f"interrupted by {name} at step {step}; checkpoint saved in {ckpt_dir}; "
                                  f"continue with: {launcher}ganctl train {shlex.quote(f'resume={run_dir}')}",
                                  stop.signum)
    except torch.OutOfMemoryError:
        raise UserError(f"out of memory on {device} at trainer.batch_size={B}; try "
                        f"trainer.batch_size={max(1, B // 2)} or trainer.precision=bf16") from None
    finally:  # keep what was logged, also when the loop stops on an error
        stop.uninstall()
        bar.close()
        if main:
            writer.close()
    log.info("finished %d steps (%d epochs); %s", max_steps, epoch + 1,
             ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    t_loop_end = time.perf_counter()
    wall["loop"] = t_loop_end - t_loop
    if main:
        write_curves(run_dir)
        write_progress_gif(sample_dir, run_dir / "progress.gif")
    if best:
        log.info("best FID %.4g at step %d: %s", best["fid"], best["step"], ckpt_dir / "best.pt")
    wall["end"] = time.perf_counter() - t_loop_end
    log.info("wall time %.1f s: start-up %.1f s (imports, config, data, networks), training loop "
             "%.1f s (quick evals %.1f s of it, %.1f s of those to set them up: feature classifier, real "
             "features), end %.1f s (curves, progress.gif)", wall["startup"] + wall["loop"] + wall["end"],
             wall["startup"], wall["loop"], wall["eval"], wall["eval_setup"], wall["end"])
    result = {"step": max_steps, **metrics, **eval_metrics, **{f"Time/{k}_s": v for k, v in wall.items()}}
    if main:  # what a sweep's summary table reads
        rundir.write_result(run_dir, result)
    return result
