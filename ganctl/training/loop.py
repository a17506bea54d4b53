"""The training loop: `train(cfg, run_dir) -> dict` of final metrics.

    ganctl train model=cdcgan loss=wgan_gp        # the CLI composes cfg and calls train()

A step is one generator update after `loss.n_critic` discriminator updates, each on a fresh real
batch. Scalars stay on the device and are read every `trainer.log_every` steps, the loop's regular
host sync (the others: sample grids, checkpoints and their finite check, quick evals).

Under torchrun (W processes) G and D are wrapped in DistributedDataParallel, each rank takes its
block of every global batch of B*W and the slice of the global batch's noise, and rank 0 alone
writes; the ranks draw identical random streams, so rank 0's checkpoint resumes all of them.
"""
import logging
import math
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ganctl.training import distributed
from ganctl.run import directory
from ganctl.config.build import build, plain, resolve_target
from ganctl.evaluation.classifier import reference_data
from ganctl.run.checkpoint import all_finite, load_checkpoint
from ganctl.data import shape as dataset_shape
from ganctl.errors import Aborted, Interrupted, UserError, one_line
from ganctl.evaluation.evaluator import scalars
from ganctl.training.clusters import clustered
from ganctl.training.wiring import (build_loss, build_step, check_compatible, conditioning, labels_of, planned_info,
                                    refuse_too_large)
from ganctl.run.outputs import RunOutputs
from ganctl.config.ranges import range_errors
from ganctl.training.meter import Meter
from ganctl.training.runtime import StopSignals, cudnn_autotuner, resolve_device, rng_untouched, seed_everything
from ganctl.training.step import TrainStep, sample_noise

log = logging.getLogger(__name__)


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


def real_batches(data, batch_size: int, start_batch: int = 0):
    """Endless (epoch, x, y) over epochs, starting at the global batch index `start_batch`."""
    per_epoch = data.batches_per_epoch(batch_size)
    epoch, i = divmod(start_batch, per_epoch)
    while True:
        for x, y in data.epoch(epoch, batch_size, start=i):
            yield epoch, x, y
        epoch, i = epoch + 1, 0


def train(cfg: DictConfig, run_dir: Path, started: float | None = None, on_start=lambda: None) -> dict:
    """Train as `cfg` says, writing into `run_dir`; the final metrics. `started`: when the job
    began (time.perf_counter()), for the start-up time it reports; default now. `on_start()` runs
    once the directory is locked and known to hold no other run, before anything is written there
    (the CLI saves .hydra/ in it). Rank 0 holds the lock for the run's life: a second writer is refused."""
    ranks = distributed.init()
    run_dir = Path(run_dir)
    with directory.lock(run_dir) if ranks.is_main else directory.nothing():
        if ranks.is_main and not cfg.get("resume"):
            directory.refuse_existing_run(run_dir)
        on_start()
        return _train(cfg, run_dir, ranks, time.perf_counter() if started is None else started)


def checkpoint_state(step: int, epoch: int, batch: int, train_step: TrainStep, ema, best: dict,
                     data_info: dict, classes: list[str], cfg_dict: dict, world_size: int, device) -> dict:
    """What last.pt, step_N.pt and best.pt hold: every state the run needs to go on exactly,
    the RNG and the count of real batches D has seen included, and the names of the classes."""
    return {"G": train_step.G.state_dict(), "D": train_step.D.state_dict(),
            **({"G_ema": ema.at(step).state_dict()} if ema is not None else {}),
            "opt_G": train_step.opt_G.state_dict(), "opt_D": train_step.opt_D.state_dict(),
            "step": step, "epoch": epoch, "batch": batch, "world_size": world_size,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []},
            "data": data_info, "classes": list(classes), "cfg": cfg_dict, "best": dict(best),
            **({"augment": train_step.ada.state_dict()} if train_step.ada is not None else {})}


class Plan(NamedTuple):
    """What a step does besides training, decided once when its updates are done."""
    log: bool       # read the scalars from the device (and stop on a non-finite loss)
    check: bool     # check the weights are finite before anything is drawn or written from them
    evaluate: bool  # the quick eval
    sample: bool    # the sample grid
    save: bool      # the checkpoint
    stop: bool      # a signal came: save, then stop with a resume line


def plan(step: int, max_steps: int, tcfg, evaluating: bool, main: bool, signalled: bool, W: int, device) -> Plan:
    log_step = step % tcfg.log_every == 0
    # Ranks agree on stopping at log steps (one process: at once); a checkpoint step always reads
    # the scalars first, so the finite check guards it.
    stop = distributed.any_rank(signalled, device) if log_step else signalled and W == 1
    last = step == max_steps or stop
    save = step % tcfg.ckpt_every == 0 or last
    sample_step = step % tcfg.sample_every == 0
    eval_step = bool(tcfg.eval_every) and step % tcfg.eval_every == 0
    return Plan(log=log_step or save, check=save or sample_step or eval_step,
                evaluate=evaluating and (eval_step or step == max_steps),
                sample=main and (sample_step or last), save=save, stop=stop)


def _train(cfg: DictConfig, run_dir: Path, ranks: distributed.Ranks, started: float) -> dict:
    tcfg, ckpt_dir, main, W = cfg.trainer, run_dir / "checkpoints", ranks.is_main, ranks.world_size
    if main and directory.remove_temporary_files(ckpt_dir):  # left by a writer that was killed
        log.info("removed half-written checkpoint files in %s", ckpt_dir)
    if errors := range_errors(cfg):
        raise UserError("; ".join(errors))

    # Set-up: device and seeds, the data, the networks, the fixed noise of the grids.
    device, autocast = runtime_for(tcfg, ranks)
    data, data_info, loss = load_data(cfg, ranks, device)
    B, num_classes, n_critic = tcfg.batch_size, data_info["num_classes"], loss.n_critic
    labelled = labels_of(data_info) > 0  # D is told each real image's class or cluster
    train_step, ema = build_step(cfg, data_info, loss, device, autocast, ranks)
    G, D = train_step.G, train_step.D
    max_steps = tcfg.max_steps or max(1, tcfg.epochs * data.batches_per_epoch(B) // n_critic)
    fixed_z, fixed_y, grid_nrow = fixed_inputs(cfg.model.z_dim, num_classes, tcfg.noise, tcfg.seed, device,
                                               codes=cfg.model.G.get("codes", 0))
    cfg_dict = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)

    # Resume: every state as it was after the checkpoint's step, so the run goes on exactly.
    start_step, start_batch, epoch, best = 0, 0, 0, {}
    if cfg.get("resume"):
        start_step, start_batch, epoch, best = resume(ckpt_dir / "last.pt", cfg, cfg_dict, train_step, ema, loss, W, device)
        if start_step >= max_steps:
            log.info("nothing to do: the run is at step %d of %d (raise trainer.max_steps to go on)",
                     start_step, max_steps)
            return {"step": start_step}

    # Outputs (rank 0 alone writes, evaluates and shows progress) and the evaluator.
    out = RunOutputs(run_dir, start_step if cfg.get("resume") else None, tcfg.keep_ckpts, best, enabled=main)
    t0 = time.perf_counter()
    evaluator = make_evaluator(cfg, device) if tcfg.eval_every and main else None
    wall = {"startup": t0 - started, "eval": 0.0, "eval_setup": time.perf_counter() - t0}  # seconds
    meter, metrics, eval_metrics = Meter(), {}, {}
    batches = real_batches(data, B, start_batch=start_batch)
    speed = Speed(start_step, n_critic * B * W)
    show_bar = tcfg.progress and main and sys.stderr.isatty()  # elsewhere a log line per log step
    bar = tqdm(total=max_steps, initial=start_step, desc="train", disable=not show_bar, dynamic_ncols=True)
    stop = StopSignals()

    def state(step: int) -> dict:  # checkpoints: D has seen one real batch per update since the start
        batch = start_batch + (step - start_step) * n_critic
        return checkpoint_state(step, epoch, batch, train_step, ema, out.best, data_info, data.class_names,
                                cfg_dict, W, device)

    t_loop = time.perf_counter()
    try:
        stop.install()
        for step in range(start_step + 1, max_steps + 1):
            # Train: n_critic D updates, each on a fresh real batch, then one G update.
            reals = []
            for _ in range(n_critic):
                epoch, real, y = next(batches)
                reals.append((real, y if labelled else None))
            for stats in train_step(reals):
                meter.add(stats)
            if ema is not None:
                ema.update(G, step)
            bar.update(1)
            do = plan(step, max_steps, tcfg, evaluator is not None, main, stop.signum is not None, W, device)

            if do.log:  # the scalars, read from the device once; a non-finite loss stops the run
                metrics = {**meter.read(), "Time/img_per_s": speed.images_per_s(step)}
                out.scalars(step, metrics)
                report_progress(bar, metrics, step, max_steps, main and not show_bar and tcfg.progress)
                if bad := [k for k, v in metrics.items() if not math.isfinite(v)]:
                    raise diverged(step, f"{', '.join(bad)} is not finite", run_dir)
            # NaN weights draw black images that can score a finite FID, and must never become
            # best.pt or last.pt: checked on every rank at the same steps, so that all stop together.
            if do.check and not all_finite(G, D, ema and ema.module):
                raise diverged(step, "the weights are not finite", run_dir)
            if do.evaluate:  # a few thousand samples of the averaged G; its own random numbers
                t0 = time.perf_counter()
                values = quick_eval(evaluator, ema.at(step) if ema is not None else G, cfg, num_classes, device,
                                    abort=lambda: W == 1 and stop.signum is not None)
                if values is None:  # a signal cut it short (one process): save this step and stop
                    out.checkpoint(step, state(step))
                    raise interrupted(stop.signum, step, ckpt_dir, run_dir, W)
                eval_metrics = {f"Eval/{k}": v for k, v in values.items()}
                if out.eval(step, values):
                    out.best_checkpoint(state(step))
                wall["eval"] += time.perf_counter() - t0
            if do.sample:  # the grid of the fixed noise, drawn by the averaged G
                out.grid(step, draw(ema.at(step) if ema is not None else G, fixed_z, fixed_y, autocast), grid_nrow)
            if do.save:  # under torchrun a collective (the replicas must agree); rank 0 writes
                check_replicas(G, D, step, W)
                if main:
                    out.checkpoint(step, state(step))
            if do.stop:
                raise interrupted(stop.signum, step, ckpt_dir, run_dir, W)
    except torch.OutOfMemoryError:
        raise UserError(f"out of memory on {device} at trainer.batch_size={B}; try "
                        f"trainer.batch_size={max(1, B // 2)} or trainer.precision=bf16") from None
    finally:
        stop.uninstall()
        bar.close()
        out.close()

    # The end: curves, progress.gif, the wall time and result.json (what a sweep's summary reads).
    log.info("finished %d steps (%d epochs); %s", max_steps, epoch + 1,
             ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    wall["loop"] = time.perf_counter() - t_loop
    return finish(out, wall, {"step": max_steps, **metrics, **eval_metrics}, run_dir, main)


def runtime_for(tcfg, ranks: distributed.Ranks):
    """The device this process trains on, seeded, and the autocast context of its precision."""
    device = resolve_device(tcfg.device, ranks.local_rank)
    if tcfg.sync_bn and ranks.world_size > 1 and device.type != "cuda":
        raise UserError("trainer.sync_bn=true needs CUDA devices (SyncBatchNorm has no CPU kernel)")
    seed_everything(tcfg.seed)
    if tcfg.deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; cudnn.benchmark would pick
        # algorithms by timing. Ops without a deterministic CUDA kernel then raise, by design.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = cudnn_autotuner(device, tcfg.deterministic)
    return device, torch.autocast(device.type, dtype=torch.bfloat16, enabled=tcfg.precision == "bf16")


def load_data(cfg, ranks: distributed.Ranks, device):
    """The training set, what the nets are sized from, and the loss. The nets' memory is checked
    from the shape the config names before a single image is read."""
    B, W = cfg.trainer.batch_size, ranks.world_size
    settings = plain(cfg.dataset)
    expected = dataset_shape(resolve_target(settings["_target_"], "dataset"), settings)
    num_classes = conditioning(cfg.model, expected["num_classes"], B)
    loss = build_loss(cfg, num_classes)
    refuse_too_large(cfg, planned_info(cfg.model, expected, num_classes), loss, device)
    data = build(cfg.dataset, "dataset", device=device, seed=cfg.trainer.seed, rank=ranks.rank, world_size=W)
    check_compatible(cfg.model, data, B, W)  # the images themselves: empty classes, a batch they fill
    log.info("data: %d images of %dx%dx%d, %d classes, %d batches of %d per epoch", len(data),
             data.img_size, data.img_size, data.img_channels, data.num_classes, data.batches_per_epoch(B), B * W)
    if W > 1:
        log.info("data parallel: %d processes (%s), batch %d each", W, torch.distributed.get_backend(), B)
    info = {"img_channels": data.img_channels, "img_size": data.img_size, "num_classes": num_classes}
    if cfg.model.get("clusters"):  # self-conditioning: each image's label is now its cluster
        data, info["clusters"] = clustered(data, cfg.model.clusters, cfg.trainer.seed)
    return data, info, loss


def resume(path: Path, cfg, cfg_dict: dict, train_step: TrainStep, ema, loss, W: int, device):
    """Every state from `path` as it was after its step, the RNG included; (step, the real batches
    D has seen, epoch, best). The data position follows from the batch count."""
    state = load_checkpoint(path, map_location=device)
    changes = config_changes(state["cfg"], cfg_dict)
    if state.get("world_size", 1) != W:  # the same batch index then names other images
        changes.append(f"processes: {state.get('world_size', 1)} -> {W}")
    if changes:
        log.warning("resuming with a config that differs from the saved run: %s", "; ".join(changes))
    restore(state, path, cfg.model.name, {"G": train_step.G, "D": train_step.D, "G_ema": ema and ema.module,
                                          "opt_G": train_step.opt_G, "opt_D": train_step.opt_D})
    if train_step.ada is not None and "augment" in state:  # else p starts again from 0
        train_step.ada.load_state_dict(state["augment"])
    try:  # the CPU state's size is checked on load; a CUDA state's depends on the device
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if device.type == "cuda" and state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
    except RuntimeError as e:
        raise UserError(f"{path}: its saved random state does not fit this machine ({one_line(e)})") from None
    # The saved batch count, not step * n_critic: n_critic may differ on this command line.
    loss.d_updates = state["batch"]  # one real batch per D update: lazy R1 falls on the same updates
    log.info("resumed %s at step %d (epoch %d)", path, state["step"], state["epoch"])
    return state["step"], state["batch"], state["epoch"], state.get("best", {})


class Speed:
    """Images a second since the last reading (D's real images, over all ranks)."""

    def __init__(self, step: int, images_per_step: int):
        self.step, self.t, self.images_per_step = step, time.perf_counter(), images_per_step

    def images_per_s(self, step: int) -> float:
        now = time.perf_counter()
        rate = (step - self.step) * self.images_per_step / (now - self.t)
        self.step, self.t = step, now
        return rate


def report_progress(bar, metrics: dict, step: int, max_steps: int, log_line: bool) -> None:
    """The losses on the progress bar, or a log line where there is no terminal."""
    losses = {k: f"{v:.3g}" for k, v in metrics.items() if k.startswith("Loss/")}
    bar.set_postfix(losses)
    if log_line:
        log.info("step %d/%d: %s, %.0f img/s", step, max_steps,
                 ", ".join(f"{k} {v}" for k, v in losses.items()), metrics["Time/img_per_s"])


def quick_eval(evaluator, G, cfg, num_classes: int, device, abort) -> dict | None:
    """The quick eval's scalars, drawn with their own random numbers (the training stream does not
    depend on eval settings); None where a signal cut it short."""
    tcfg = cfg.trainer
    try:
        with rng_untouched(device):
            result = evaluator.evaluate(G, num_classes, cfg.model.z_dim, tcfg.noise, n=tcfg.eval_n,
                                        seed=tcfg.seed, full=False, abort=abort)
    except Aborted:
        log.info("quick eval left unfinished: a signal came")
        return None
    return scalars(result)


def check_replicas(G, D, step: int, W: int) -> None:
    """Under torchrun, that every rank holds the same G and D (a collective: all ranks call it)."""
    if W == 1:
        return
    differ = {name: distributed.replicas_differ(m) for name, m in (("G", G), ("D", D))}
    if any(differ.values()):
        raise RuntimeError(f"DDP replicas diverged by step {step}: {differ} parameters differ")
    log.info("step %d: G and D identical on all %d ranks", step, W)


def interrupted(signum, step: int, ckpt_dir: Path, run_dir: Path, W: int) -> Interrupted:
    """The stop after a signal, with the command that continues the run."""
    name = signal.Signals(signum or signal.SIGTERM).name
    launcher = f"torchrun --nproc_per_node={W} -m " if W > 1 else ""
    return Interrupted(f"interrupted by {name} at step {step}; checkpoint saved in {ckpt_dir}; "
                       f"continue with: {launcher}ganctl train {shlex.quote(f'resume={run_dir}')}", signum)


def draw(G, z, y, autocast) -> torch.Tensor:
    """G's images of (z, y) in eval mode (BatchNorm's running statistics), G left training."""
    was_training = G.training
    with torch.no_grad(), autocast:
        images = G.eval()(z, y).float()
    G.train(was_training)
    return images


def finish(out: RunOutputs, wall: dict, result: dict, run_dir: Path, main: bool) -> dict:
    """Curves and progress.gif, the best checkpoint named, the wall time logged, result.json
    written (rank 0); the run's result."""
    t0 = time.perf_counter()
    out.finish()
    if out.best:
        log.info("best FID %.4g at step %d: %s", out.best["fid"], out.best["step"], run_dir / "checkpoints" / "best.pt")
    wall["end"] = time.perf_counter() - t0
    log.info("wall time %.1f s: start-up %.1f s (imports, config, data, networks), training loop "
             "%.1f s (quick evals %.1f s of it), feature classifier and real features %.1f s, end %.1f s "
             "(curves, progress.gif)", wall["startup"] + wall["eval_setup"] + wall["loop"] + wall["end"],
             wall["startup"], wall["loop"], wall["eval"], wall["eval_setup"], wall["end"])
    result = {**result, **{f"Time/{k}_s": v for k, v in wall.items()}}
    if main:
        directory.write_result(run_dir, result)
    return result


def diverged(step: int, what: str, run_dir: Path) -> UserError:
    """The error that stops a run whose losses or weights stopped being finite: what it keeps."""
    last = run_dir / "checkpoints" / "last.pt"
    kept = (f"the last good checkpoint in {last.parent} is untouched" if last.is_file()
            else f"no checkpoint had been written yet (the log and scalars are in {run_dir})")
    return UserError(f"training diverged by step {step}: {what}; {kept}")


def make_evaluator(cfg, device):
    """The quick eval's Evaluator, or None (with a warning) where the dataset cannot have one."""
    from ganctl.evaluation.evaluator import Evaluator  # torchmetrics: imported only where eval is on
    try:
        with rng_untouched(device):
            return Evaluator(reference_data(cfg.dataset), device, **plain(cfg.eval))
    except UserError as e:
        log.warning("quick eval is off: %s", e)
        return None
