"""What a training run writes into its directory, in one place: TensorBoard scalars and grids,
the JSON-lines logs, sample grids, and the checkpoints (last.pt, step_N.pt, best.pt).

    out = RunOutputs(run_dir, resume_step=None, keep_ckpts=3)
    out.scalars(step, {"Loss/D": 0.7}); out.grid(step, images, nrow=10); out.checkpoint(step, state)
    out.close(); out.finish()

Under torchrun only rank 0 writes: the other ranks hold RunOutputs(..., enabled=False), whose
methods do nothing, so the loop reads the same on every rank.
"""
import logging
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from ganctl.run.checkpoint import prune_checkpoints, save_checkpoint, save_copy
from ganctl.run.report import JsonLines, write_curves, write_progress_gif

log = logging.getLogger(__name__)


class RunOutputs:
    def __init__(self, run_dir: Path, resume_step: int | None, keep_ckpts: int, best: dict | None = None,
                 enabled: bool = True):
        self.run_dir, self.keep_ckpts, self.enabled = Path(run_dir), keep_ckpts, enabled
        self.ckpt_dir, self.sample_dir = self.run_dir / "checkpoints", self.run_dir / "samples"
        self.best = dict(best or {})  # {"fid": value, "step": step} of best.pt
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        # On resume, purge_step drops the TensorBoard points the stopped run wrote after its
        # checkpoint; the JSON-lines logs are cut the same way.
        self.writer = SummaryWriter(str(self.run_dir / "tb"),
                                    purge_step=resume_step + 1 if resume_step is not None else None)
        self.train_log = JsonLines(self.run_dir / "metrics.jsonl")
        self.eval_log = JsonLines(self.run_dir / "eval.jsonl")
        if resume_step is not None:
            self.train_log.truncate_after(resume_step)
            self.eval_log.truncate_after(resume_step)

    def scalars(self, step: int, metrics: dict) -> None:
        """A log step's scalars: TensorBoard and a line of metrics.jsonl."""
        if self.enabled:
            for k, v in metrics.items():
                self.writer.add_scalar(k, v, step)
            self.train_log.append({"step": step, **metrics})

    def grid(self, step: int, images: torch.Tensor, nrow: int) -> None:
        """samples/step_N.png and TensorBoard's `samples` image from images in [-1, 1]."""
        if self.enabled:
            grid = make_grid(images, nrow=nrow, normalize=True, value_range=(-1, 1))
            self.sample_dir.mkdir(parents=True, exist_ok=True)
            save_image(grid, self.sample_dir / f"step_{step}.png")
            self.writer.add_image("samples", grid, step)

    def eval(self, step: int, values: dict) -> bool:
        """A quick eval's scalars (Eval/* and a line of eval.jsonl); whether its FID is the best yet."""
        if not self.enabled:
            return False
        for k, v in values.items():
            self.writer.add_scalar(f"Eval/{k}", v, step)
        self.eval_log.append({"step": step, **values})
        log.info("step %d eval: %s", step, ", ".join(f"{k} {values[k]:.4g}" for k in
                                                      ("fid", "fid_ratio", "precision", "recall", "label_acc")
                                                      if k in values))
        if self.best and values["fid"] >= self.best["fid"]:
            return False
        self.best.update(fid=values["fid"], step=step)
        return True

    def best_checkpoint(self, state: dict) -> None:
        if self.enabled:
            save_checkpoint(state, self.ckpt_dir / "best.pt")

    def checkpoint(self, step: int, state: dict) -> None:
        """last.pt first, so that a run always has one; step_N.pt is the same file (a hard link);
        periodic ones beyond keep_ckpts are removed."""
        if self.enabled:
            save_checkpoint(state, self.ckpt_dir / "last.pt")
            if self.keep_ckpts:
                save_copy(self.ckpt_dir / "last.pt", self.ckpt_dir / f"step_{step}.pt")
            prune_checkpoints(self.ckpt_dir, self.keep_ckpts)

    def close(self) -> None:
        """Keeps what was logged, also when the loop stops on an error."""
        if self.enabled:
            try:
                self.writer.close()
            except OSError as e:  # a full disk: the error that stopped the run (the checkpoint's) is the one to tell
                log.warning("TensorBoard scalars may be incomplete: %s", e)

    def finish(self) -> None:
        """curves.png and progress.gif, at the end of a run."""
        if self.enabled:
            write_curves(self.run_dir)
            write_progress_gif(self.sample_dir, self.run_dir / "progress.gif")
