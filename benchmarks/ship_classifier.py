"""Write the MNIST feature classifier that ships inside the package, and print its SHIPPED entry
for ganctl/classifier.py's table (file digest, test-split fingerprint, test accuracy).

    GANCTL_DATA=../shared/data python benchmarks/ship_classifier.py     # fits once, or reads the cache

Run it again only when the classifier's network or recipe changes (classifier.VERSION).
"""
import hashlib
import os

import torch
from omegaconf import OmegaConf

from ganctl.build import reference_data
from ganctl.classifier import SHIPPED_DIR, classifier_path, fit


def main() -> None:
    root = os.environ.get("GANCTL_DATA", "data")
    ref = reference_data(OmegaConf.create({"_target_": "ganctl.data.load_mnist", "root": root,
                                           "download": False, "split": "train"}))
    cached = classifier_path(ref)
    if cached.is_file():
        state = torch.load(cached, map_location="cpu", weights_only=True)
        weights, acc = state["weights"], state["test_acc"]
    else:
        clf, acc = fit(ref, "cpu")
        weights = clf.state_dict()
    out = SHIPPED_DIR / "mnist.pt"
    SHIPPED_DIR.mkdir(exist_ok=True)
    torch.save({"weights": weights, "test_acc": acc, "test_key": ref.test_key, "num_classes": ref.num_classes}, out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f'"mnist": {{"file": "mnist.pt", "test_key": "{ref.test_key}", "sha256": "{digest}", '
          f'"test_acc": {acc:.4f}}},')


if __name__ == "__main__":
    main()
