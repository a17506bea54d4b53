"""Write MNIST as an image folder of RGB PNGs at a chosen size, class subfolders 0-9, for the
`dataset=folder` and `model=resnet` experiments of docs/results.md:

    python benchmarks/mnist_folder.py /tmp/mnist64 --size 64 --n 6000     # from $GANCTL_DATA or ../shared/data

The first n images of the training split as a class-balanced subset (ganctl.data.balanced_subset),
resized with bilinear filtering, the grey value copied to three channels.
"""
import argparse
import os
from pathlib import Path

from PIL import Image

from ganctl.data import balanced_subset, load_mnist


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--n", type=int, default=6000, help="images (class-balanced)")
    p.add_argument("--data", default=os.environ.get("GANCTL_DATA", "../shared/data"))
    args = p.parse_args(argv)
    data = load_mnist(args.data, download=False, split="train")
    keep = balanced_subset(data.labels, args.n, data.num_classes)
    for k in range(data.num_classes):
        (args.out / str(k)).mkdir(parents=True, exist_ok=True)
    for i in keep.tolist():
        img = Image.fromarray(data.images[i, 0].numpy()).resize((args.size, args.size), Image.BILINEAR)
        img.convert("RGB").save(args.out / str(int(data.labels[i])) / f"{i:05d}.png")
    print(f"wrote {len(keep)} images of {args.size}x{args.size} RGB under {args.out}")


if __name__ == "__main__":
    main()
