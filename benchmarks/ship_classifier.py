"""Write a feature classifier that ships inside the package (MNIST's, Fashion-MNIST's), and print
its SHIPPED entry for ganctl/evaluation/classifier.py's table (file digest, test-split fingerprint, test accuracy).

    GANCTL_DATA=../shared/data python benchmarks/ship_classifier.py [mnist|fashion_mnist]   # fits once, or reads the cache

Run it again only when the classifier's network or recipe changes (classifier.VERSION).
"""
import hashlib
import os
import sys

import torch
from omegaconf import OmegaConf

from ganctl.evaluation.classifier import reference_data
from ganctl.evaluation.classifier import SHIPPED_DIR, classifier_path, fit


def main(name: str) -> None:
    root = os.environ.get("GANCTL_DATA", "data")
    ref = reference_data(OmegaConf.create({"_target_": f"ganctl.data.load_{name}", "root": root,
                                           "download": False, "split": "train"}))
    cached = classifier_path(ref)
    if cached.is_file():
        state = torch.load(cached, map_location="cpu", weights_only=True)
        weights, acc = state["weights"], state["test_acc"]
    else:
        clf, acc = fit(ref, "cpu")
        weights = clf.state_dict()
    out = SHIPPED_DIR / f"{name}.pt"
    SHIPPED_DIR.mkdir(exist_ok=True)
    torch.save({"weights": weights, "test_acc": acc, "test_key": ref.test_key, "num_classes": ref.num_classes}, out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f'"{name}": {{"file": "{name}.pt", "test_key": "{ref.test_key}", "sha256": "{digest}", '
          f'"test_acc": {acc:.4f}}},')


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mnist")
