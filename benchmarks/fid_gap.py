"""What a run's FID is made of, on ganctl's classifier features: the whole sample, the sample with
its class shares matched to the data's, the classes one by one (each against the real images of
that class), and the images the classifier is unsure of. Two runs side by side (an unconditional
and a conditional one) tell a gap apart into class shares, malformed images and the rest.

    GANCTL_DATA=../shared/data python benchmarks/fid_gap.py RUN [RUN ...] [--n 10000] [--out x.json]

Every subset is compared with a random subset of the same size of the same sample, because FID
grows as n shrinks; "excess" is the subset's FID minus that of the random subset.
"""
import argparse
import json
from pathlib import Path

import torch

import ganctl
from ganctl.evaluation import metrics
from ganctl.evaluation.classifier import reference_data
from ganctl.evaluation.evaluator import Evaluator


def share_matched(pred: torch.Tensor, real_shares: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Indices of the largest subset whose predicted-class shares are the real shares (no repeats)."""
    counts = torch.bincount(pred, minlength=len(real_shares)).float()
    size = int(torch.min(counts / real_shares.clamp_min(1e-12)).item())
    picked = []
    for k, share in enumerate(real_shares.tolist()):
        members = (pred == k).nonzero().flatten()
        picked.append(members[torch.randperm(len(members), generator=g)[:round(size * share)]])
    return torch.cat(picked)


def analyse(run: str, n: int, device: str) -> dict:
    G = ganctl.load(run, device=device)
    ev = Evaluator(reference_data(G.config.dataset), G.device, "classifier")
    labels = list(range(G.num_classes)) if G.num_classes else None
    images, asked = G.draw(n, labels, seed=0)
    feats, logits = ev.embed(images)
    probs = logits.softmax(1).cpu()
    pred = probs.argmax(1)
    g = torch.Generator().manual_seed(0)
    real, real_y = ev.real_a, ev.labels_a
    real_shares = torch.bincount(real_y, minlength=ev.num_classes).float() / len(real_y)

    def fid_of(idx):
        return metrics.fid(real, feats[idx.to(feats.device)])

    def random_of(size):
        return torch.randperm(len(feats), generator=g)[:size]

    row = {"run": run, "n": len(feats), "fid": metrics.fid(real, feats), "floor": ev.floor(len(feats))}
    matched = share_matched(pred, real_shares, g)
    row.update(matched_n=len(matched), fid_matched=fid_of(matched), fid_random_same_n=fid_of(random_of(len(matched))))
    for threshold in (0.9, 0.99):
        sure = (probs.max(1).values >= threshold).nonzero().flatten()
        row[f"share_sure_{threshold}"] = len(sure) / len(feats)
        row[f"fid_sure_{threshold}"] = fid_of(sure)
        row[f"fid_random_n_sure_{threshold}"] = fid_of(random_of(len(sure)))
    # Each class against the real images of that class, by what the classifier reads (and, for a
    # conditional model, by what was asked): the within-class part of the gap.
    per_class = []
    for k in range(ev.num_classes):
        fake_k = feats[(pred == k).to(feats.device)]
        real_k = real[(real_y == k).to(real.device)]
        per_class.append(metrics.fid(real_k, fake_k) if len(fake_k) > 1 else float("nan"))
    row["intra_fid_by_read_class"] = sum(per_class) / len(per_class)
    row["intra_fid_by_read_class_per_class"] = per_class
    row["class_shares"] = (torch.bincount(pred, minlength=ev.num_classes).float() / len(pred)).tolist()
    row["label_tv"] = 0.5 * (torch.tensor(row["class_shares"]) - real_shares).abs().sum().item()
    if G.num_classes:
        row["label_acc"] = (pred == asked.cpu()).float().mean().item()
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    rows = [analyse(run, args.n, args.device) for run in args.runs]
    keys = ["fid", "floor", "matched_n", "fid_matched", "fid_random_same_n", "share_sure_0.9", "fid_sure_0.9",
            "fid_random_n_sure_0.9", "share_sure_0.99", "fid_sure_0.99", "fid_random_n_sure_0.99",
            "intra_fid_by_read_class", "label_tv", "label_acc"]
    print("| run | " + " | ".join(keys) + " |")
    print("|" + " --- |" * (len(keys) + 1))
    for r in rows:
        print(f"| {Path(r['run']).name} | " + " | ".join(f"{r[k]:.4g}" if k in r else "" for k in keys) + " |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
