"""What a run leaves for people to read besides TensorBoard: JSON-lines logs of the scalars
(metrics.jsonl, eval.jsonl) and, at the end, curves.png and progress.gif.

    log = JsonLines(run_dir / "eval.jsonl"); log.append({"step": 500, "fid": 3.1})
    write_curves(run_dir); write_progress_gif(run_dir / "samples", run_dir / "progress.gif")
"""
import json
import math
import re
from pathlib import Path


class JsonLines:
    """One JSON object a line, each with a "step"."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a kill: skip it
                continue
            if isinstance(record, dict) and isinstance(record.get("step", 0), int):
                records.append(record)
        return records

    def truncate_after(self, step: int) -> None:
        """Drop records written after `step` (by a run that stopped after its last checkpoint)."""
        if self.path.is_file():
            kept = [r for r in self.read() if r.get("step", 0) <= step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def write_curves(run_dir: Path, out: Path | None = None) -> Path | None:
    """Losses, mean D outputs and eval metrics over steps, one panel each, as curves.png."""
    from matplotlib.figure import Figure  # no pyplot: no display, no global figure state

    run_dir = Path(run_dir)
    train = JsonLines(run_dir / "metrics.jsonl").read()
    evals = JsonLines(run_dir / "eval.jsonl").read()
    panels = [("losses", train, ["Loss/D", "Loss/G", "Loss/GP"]),
              ("mean D output", train, ["D/real", "D/fake"]),
              ("FID (classifier features)", evals, ["fid", "fid_floor"]),
              ("precision / recall / coverage", evals, ["precision", "recall", "coverage", "label_acc"])]
    panels = [(t, rows, [k for k in keys if any(k in r for r in rows)]) for t, rows, keys in panels]
    panels = [p for p in panels if p[2]]
    if not panels:
        return None
    # Fixed margins instead of tight_layout, which draws the figure once more to measure it.
    fig = Figure(figsize=(4.2 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels), squeeze=False, gridspec_kw=dict(left=0.9 / (4.2 * len(panels)), right=0.98,
                                                                      bottom=0.16, top=0.9, wspace=0.28))
    for ax, (title, rows, keys) in zip(axes[0], panels):
        for k in keys:
            pts = [(r["step"], r[k]) for r in rows if k in r and math.isfinite(r[k])]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k, marker="." if len(pts) < 30 else None)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    out = Path(out) if out else run_dir / "curves.png"
    fig.savefig(out, dpi=100)
    return out


def write_progress_gif(sample_dir: Path, out: Path, ms_per_frame: int = 400) -> Path | None:
    """The fixed-noise grids samples/step_<N>.png in step order as one looping GIF."""
    from PIL import Image

    grids = sorted(Path(sample_dir).glob("step_*.png"),
                   key=lambda p: int(re.search(r"step_(\d+)", p.name).group(1)))
    if not grids:
        return None
    frames = [Image.open(p).convert("RGB") for p in grids]
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=ms_per_frame,
                   loop=0)
    return Path(out)
