"""`ganctl eval` and `ganctl fit-classifier`: the metrics of one checkpoint (ganctl.evaluator
computes them), and the feature classifier they use, fitted ahead of time.

    ganctl eval ckpt=outputs/<day>/<run> n=10000      # a table, and <run>/eval.json
"""
import json
from pathlib import Path


from ganctl.build import plain, reference_data
from ganctl.checkpoint import load_checkpoint, resolve_checkpoint, run_config
from ganctl.classifier import classifier_path, load_or_fit, shipped_classifier
from ganctl.errors import UserError, one_line
from ganctl.evaluator import Evaluator, format_table
from ganctl.models import load_generator
from ganctl.runtime import resolve_device


def eval_checkpoint_path(ckpt: str | None, which: str, outputs: str) -> Path:
    """`which=best` takes checkpoints/best.pt of a run directory where the run kept one."""
    if which not in ("best", "last"):
        raise UserError(f"which={which}: choose best or last")
    last = resolve_checkpoint(ckpt, outputs)
    named_a_file = ckpt is not None and Path(ckpt).expanduser().is_file()
    best = last.with_name("best.pt")
    return best if which == "best" and not named_a_file and best.is_file() else last


def run_eval(cfg) -> dict:
    """`ganctl eval`: metrics of one checkpoint, printed and written to <run>/eval.json
    (eval_inception.json with eval=inception)."""
    if cfg.generator not in ("ema", "raw"):
        raise UserError(f"generator={cfg.generator}: must be ema or raw")
    path = eval_checkpoint_path(cfg.ckpt, cfg.which, cfg.outputs)
    state = load_checkpoint(path)
    run_cfg = run_config(state)
    device = resolve_device(cfg.device, key="device")
    which = "G_ema" if cfg.generator == "ema" and "G_ema" in state else "G"
    G = load_generator(state, path, which, device)
    ev = Evaluator(reference_data(run_cfg.dataset), device, **plain(cfg.eval))
    result = ev.evaluate(G, state["data"]["num_classes"], run_cfg.model.z_dim, run_cfg.trainer.noise,
                         n=cfg.n, seed=cfg.seed, full=True)
    result = {"checkpoint": str(path.resolve()), "step": state["step"],
              "generator": which, "classes": state.get("classes", []), **result}
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    backbone = getattr(cfg.eval.backbone, "value", cfg.eval.backbone)
    out = run_dir / ("eval.json" if backbone == "classifier" else f"eval_{backbone}.json")  # one file per feature kind
    print(f"{path} (step {state['step']}, {result['generator']})")
    print(format_table(result, result["classes"]), flush=True)  # before the write, which may fail: the table is not lost
    try:
        out.write_text(json.dumps(result, indent=2))
    except OSError as e:
        raise UserError(f"the table above was computed but {one_line(e)}") from None
    print(f"wrote {out}")
    return result


def run_fit_classifier(cfg) -> None:
    """`ganctl fit-classifier`: fit and cache the feature classifier of a dataset."""
    ref = reference_data(cfg.dataset)
    path = classifier_path(ref)
    if path.is_file() and not cfg.refit:
        _, acc = load_or_fit(ref, "cpu")
        print(f"{path} exists ({100 * acc:.2f}% test accuracy); refit=true fits it again")
        return
    shipped = None if cfg.refit else shipped_classifier(ref)
    if shipped:
        print(f"ganctl ships the classifier for this dataset ({shipped[2]}, {100 * shipped[1]:.2f}% test "
              f"accuracy), so evals need no fit; refit=true fits one of your own, which evals then use")
        return
    _, acc = load_or_fit(ref, resolve_device(cfg.device, key="device"), refit=True, epochs=cfg.epochs,
                         batch_size=cfg.batch_size, seed=cfg.seed)
    print(f"wrote {path}: {100 * acc:.2f}% accuracy on {len(ref.test_x)} test images")
