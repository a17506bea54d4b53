"""Grids of several runs drawn from the same z, side by side in one PNG, each under its caption:
what an option changes in the look of the samples (docs/results.md's figures).

    python benchmarks/same_z.py docs/upsample_dcgan_mnist.png \
        transposed=outputs/quality/dcgan_bce_s0 nearest=outputs/quality/dcgan_bce_s0_model.G.upsample=nearest

Each grid is `ganctl sample ckpt=<run> seed=<seed> n=<n>`: the same seed draws the same z (and
labels) for runs of the same model, so the columns differ only by their generators.
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw


def grid(run: Path, seed: int, n: int, where: Path) -> Image.Image:
    out = where / f"{len(list(where.iterdir()))}.png"
    exe = Path(sys.executable).parent / "ganctl"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ganctl"]
    r = subprocess.run([*cmd, "sample", f"ckpt={run}", f"seed={seed}", f"n={n}", f"out={out}", "device=cpu"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{run}: {r.stderr.strip()}")
    return Image.open(out).convert("RGB")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("runs", nargs="+", help="caption=run_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=64)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        panels = [(caption, grid(Path(run), args.seed, args.n, Path(tmp)))
                  for caption, run in (item.split("=", 1) for item in args.runs)]
    pad, text_h = 8, 18
    w, h = panels[0][1].size
    sheet = Image.new("RGB", (len(panels) * (w + pad) + pad, h + text_h + 2 * pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (caption, image) in enumerate(panels):
        x = pad + i * (w + pad)
        draw.text((x, pad // 2), caption, fill="black")
        sheet.paste(image, (x, text_h + pad))
    sheet.save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
