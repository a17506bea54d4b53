"""What the shipped defaults reach: every model x loss trained through `ganctl train` on the real
MNIST and judged by `ganctl eval` (10,000 images), one table for docs/results.md.

    GANCTL_DATA=../shared/data python benchmarks/quality.py                  # every pair, seed 0
    python benchmarks/quality.py --pairs cdcgan:bce,dcgan:wgan_gp --seeds 0,1 --steps 936
    python benchmarks/quality.py --table-only                               # rewrite the table from the JSON
    python benchmarks/quality.py --pairs dcgan:bce --set model.G.upsample=nearest   # an option's row

Rows trained with --set overrides are an experiment, not the defaults: they are printed as their
own table (next to the defaults' rows of the same pairs and seeds) and kept out of results.md's.

Each run lives in --runs/<model>_<loss>_s<seed>; a run whose eval.json exists is not trained again,
so a cut-short invocation goes on where it stopped. The figures go to --out (JSON, rewritten after
every run) and the table between the `quality-table` markers at the top of docs/results.md.
A pair's steps are ganctl steps: one G update after loss.n_critic D updates (936 = 2 epochs of
MNIST at batch 128 where n_critic is 1, 10 epochs of critic data for wgan and wgan_gp).

CI does not run this (a conv pair with 5 critic updates takes 15-40 minutes on a 2-core CPU);
tests/test_quality.py keeps the bar's two runs and a short guard over every pair.
"""
import argparse
import datetime
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results.md"
BEGIN, END = "<!-- quality-table:begin -->", "<!-- quality-table:end -->"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


def machine() -> str:
    """The machine that the runs' `trainer.device=auto` trains on."""
    from ganctl.training.runtime import device_name, resolve_device
    return device_name(resolve_device("auto"))


def ganctl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "ganctl"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ganctl"]
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True)


def run_pair(runs: Path, model: str, loss: str, seed: int, steps: int, n: int, sets: tuple = ()) -> dict:
    """Train (unless done) and evaluate one pair, with `sets` overrides; the row of the table."""
    run_dir = runs / "_".join([f"{model}_{loss}_s{seed}", *(s.replace("/", "-") for s in sets)])
    if not (run_dir / "eval.json").is_file():
        if run_dir.exists():  # a run cut short: start it again from nothing
            import shutil
            shutil.rmtree(run_dir)
        t0 = time.perf_counter()
        offline = [] if "dataset=folder" in sets else ["dataset.download=false"]  # a folder has no download key
        r = ganctl("train", f"model={model}", f"loss={loss}", f"trainer.max_steps={steps}",
                   f"trainer.seed={seed}", *offline, "trainer.progress=false",
                   *sets, f"hydra.run.dir={run_dir}", cwd=runs)
        train_s = time.perf_counter() - t0
        if r.returncode != 0:
            return {"model": model, "loss": loss, "seed": seed, "steps": steps, "set": " ".join(sets), "error": r.stderr.strip()[-300:]}
        (run_dir / "train_wall_s.txt").write_text(f"{train_s:.1f}\n")
        r = ganctl("eval", f"ckpt={run_dir}", "which=last", f"n={n}", cwd=runs)
        if r.returncode != 0:
            return {"model": model, "loss": loss, "seed": seed, "steps": steps, "set": " ".join(sets), "error": r.stderr.strip()[-300:]}
    metrics = {k: v["value"] for k, v in json.loads((run_dir / "eval.json").read_text())["metrics"].items()}
    return {"model": model, "loss": loss, "seed": seed, "steps": steps, **({"set": " ".join(sets)} if sets else {}),
            "train_s": float((run_dir / "train_wall_s.txt").read_text()),
            **{k: metrics.get(k) for k in ("fid", "fid_floor", "fid_ratio", "intra_fid", "label_acc", "label_tv",
                                           "precision", "recall")}}


def table(rows: list[dict], where: str) -> str:
    """The Markdown table: one line per pair, seeds joined with commas."""
    lines = ["| model | loss | steps | seeds | FID | FID / floor | label acc (conditional) or label TV | "
             "recall | train time | machine |", "|" + " --- |" * 10]
    key = lambda r: (options("model").index(r["model"]), options("loss").index(r["loss"]), r.get("set", ""), r["steps"])
    for (model, loss, sets, _), group in itertools.groupby(sorted(rows, key=key), key=key):
        model, loss = options("model")[model], options("loss")[loss]
        loss = f"{loss} {sets}".strip()
        group = sorted(group, key=lambda r: r["seed"])
        done = [r for r in group if "error" not in r]
        if not done:
            lines.append(f"| {model} | {loss} | {group[0]['steps']} | | failed: {group[0]['error'][:80]} | | | | | |")
            continue
        seeds = ", ".join(str(r["seed"]) for r in done)
        fid = ", ".join(f"{r['fid']:.3g}" for r in done)
        ratio = ", ".join(f"{r['fid_ratio']:.0f}x" for r in done)
        label = ", ".join(f"{100 * r['label_acc']:.1f}%" if r["label_acc"] is not None else f"TV {r['label_tv']:.3f}"
                          for r in done)
        recall = ", ".join(f"{r['recall']:.2f}" for r in done)
        minutes = ", ".join(f"{r['train_s'] / 60:.1f} min" for r in done)
        lines.append(f"| {model} | {loss} | {done[0]['steps']} | {seeds} | {fid} | {ratio} | {label} | {recall} | "
                     f"{minutes} | {where} |")
    return "\n".join(lines)


def write_table(text: str) -> None:
    doc = RESULTS.read_text()
    if BEGIN not in doc:
        raise SystemExit(f"{RESULTS} has no {BEGIN} marker")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    RESULTS.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", help="model:loss,... (default: every model x loss in conf/)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--steps", type=int, default=936)
    p.add_argument("--n", type=int, default=10_000, help="images per eval")
    p.add_argument("--runs", type=Path, default=REPO / "outputs" / "quality")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" /
                   f"quality-{datetime.date.today().isoformat()}.json")
    p.add_argument("--set", action="append", default=[], help="an override for every run (repeatable)")
    p.add_argument("--table-only", action="store_true", help="rewrite docs/results.md's table from --out")
    args = p.parse_args(argv)
    if not args.table_only:
        pairs = ([tuple(x.split(":")) for x in args.pairs.split(",")] if args.pairs
                 else list(itertools.product(options("model"), options("loss"))))
        seeds = [int(s) for s in args.seeds.split(",")]
        args.runs.mkdir(parents=True, exist_ok=True)
        for (model, loss), seed in itertools.product(pairs, seeds):
            row = run_pair(args.runs, model, loss, seed, args.steps, args.n, tuple(args.set))
            same = lambda r: (r["model"], r["loss"], r["seed"], r["steps"], r.get("set", "")) == \
                (model, loss, seed, args.steps, " ".join(args.set))
            # read again before each write: another invocation may have added rows meanwhile
            saved = json.loads(args.out.read_text()) if args.out.is_file() else {"machine": machine(), "rows": []}
            saved["rows"] = [r for r in saved["rows"] if not same(r)] + [row]
            args.out.write_text(json.dumps(saved, indent=1))
            print(json.dumps(row), flush=True)
    saved = json.loads(args.out.read_text())
    if args.set:  # an experiment: its rows beside the defaults' rows of the same pairs, printed only
        pairs = {(r["model"], r["loss"]) for r in saved["rows"] if r.get("set") == " ".join(args.set)}
        print(table([r for r in saved["rows"] if (r["model"], r["loss"]) in pairs
                     and r.get("set", "") in ("", " ".join(args.set))], saved["machine"]))
        return
    text = table([r for r in saved["rows"] if not r.get("set")], saved["machine"])
    print(text)
    write_table(text)


if __name__ == "__main__":
    main()
