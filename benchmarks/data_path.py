"""How fast a folder's images reach the training step, against the step itself, on one device:

    python benchmarks/data_path.py /tmp/mnist64 --size 64 --model resnet --batch 64

Three rates in images per second, measured in the same run: decoding the folder with DataLoader
workers (what `dataset.cache=false` does every epoch, and `cache=true` once), serving batches
from the decoded, device-resident images (what every epoch costs with the cache), and ganctl's
training step for the model at that size (n_critic D updates and one G update; img/s counts the
real images D consumed). The data path keeps up where its rate is well above the step's.
"""
import argparse
import time

import torch
from omegaconf import open_dict

from ganctl.data import load_folder
from ganctl.training.wiring import build_loss, build_step, conditioning
from ganctl.training.runtime import device_name, resolve_device


def rate(batches, n_images: int, sync) -> float:
    t0 = time.perf_counter()
    for _ in batches:
        pass
    sync()
    return n_images / (time.perf_counter() - t0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--model", default="resnet")
    p.add_argument("--loss", default="hinge")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    name = device_name(device)

    folder = load_folder(args.folder, args.size, 3, args.workers, cache=False, device=device)
    per_epoch = folder.batches_per_epoch(args.batch) * args.batch
    decode = rate(folder.epoch(0, args.batch), per_epoch, sync)
    cached = load_folder(args.folder, args.size, 3, args.workers, cache=True, device=device)
    serve = rate(cached.epoch(0, args.batch), per_epoch, sync)

    from hydra import compose, initialize_config_module
    from ganctl.cli import registry
    registry.register()
    with initialize_config_module("ganctl.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"model={args.model}", f"loss={args.loss}", f"trainer.batch_size={args.batch}"])
    num_classes = conditioning(cfg.model, cached.num_classes, args.batch)
    info = {"img_channels": 3, "img_size": args.size, "num_classes": num_classes}
    loss = build_loss(cfg, num_classes)
    step, _ = build_step(cfg, info, loss, device)
    batches = cached.epoch(0, args.batch)
    feed = lambda: [(x, y if num_classes else None) for x, y in (next(batches) for _ in range(loss.n_critic))]
    step(feed())  # the first step allocates and picks kernels
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(feed())
    sync()
    train = args.steps * loss.n_critic * args.batch / (time.perf_counter() - t0)
    print(f"| device | size | decode (img/s) | serve cached (img/s) | train step {args.model}+{args.loss} (img/s) "
          f"| decode / step | serve / step |\n| --- | --- | --- | --- | --- | --- | --- |\n"
          f"| {name} | {args.size} | {decode:.0f} | {serve:.0f} | {train:.0f} | {decode / train:.1f}x | {serve / train:.0f}x |")


if __name__ == "__main__":
    main()
