"""`ganctl eval` and `ganctl fit-classifier`: the metrics of one checkpoint (ganctl.evaluation.evaluator
computes them), and the feature classifier they use, fitted ahead of time.

    ganctl eval ckpt=outputs/<day>/<run> n=10000      # a table, and <run>/eval.json
"""
import json

from ganctl.api import Generator
from ganctl.config.build import plain
from ganctl.evaluation.classifier import reference_data
from ganctl.evaluation.classifier import classifier_path, load_or_fit, shipped_classifier
from ganctl.errors import UserError, one_line
from ganctl.evaluation.evaluator import Evaluator, format_table
from ganctl.training.runtime import resolve_device


def run_eval(cfg) -> dict:
    """`ganctl eval`: metrics of one checkpoint, printed and written to <run>/eval.json
    (eval_inception.json with eval=inception)."""
    G = Generator(cfg.ckpt, cfg.which, cfg.generator, cfg.device, cfg.outputs)
    ev = Evaluator(reference_data(G.config.dataset), G.device, **plain(cfg.eval))
    result = ev.evaluate(G.module, G.num_classes, G.z_dim, G.noise, n=cfg.n, seed=cfg.seed, full=True)
    result = {"checkpoint": str(G.path.resolve()), "step": G.step, "generator": G.which, "classes": G.classes,
              **result}
    run_dir = G.path.parent.parent if G.path.parent.name == "checkpoints" else G.path.parent
    backbone = getattr(cfg.eval.backbone, "value", cfg.eval.backbone)
    out = run_dir / ("eval.json" if backbone == "classifier" else f"eval_{backbone}.json")  # one file per feature kind
    print(f"{G.path} (step {G.step}, {G.which})")
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
    chosen = {k: cfg[k] for k in ("epochs", "batch_size") if cfg[k] is not None}  # null: what every eval's fit uses
    _, acc = load_or_fit(ref, resolve_device(cfg.device, key="device"), refit=True, seed=cfg.seed, **chosen)
    print(f"wrote {path}: {100 * acc:.2f}% accuracy on {len(ref.test_x)} test images")
