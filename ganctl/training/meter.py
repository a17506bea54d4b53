"""The loop's running means: scalar tensors summed on the device and read with one host sync per log."""
import torch

from ganctl.training import distributed


class Meter:
    """Sums of scalar tensors kept on the device; `read()` syncs once for all of them."""

    def __init__(self):
        self.sums, self.counts = {}, {}

    def add(self, stats: dict) -> None:
        for k, v in stats.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + 1

    def read(self) -> dict:
        """Means since the last read, over all ranks (every rank gets the same numbers)."""
        if not self.sums:
            return {}
        values = distributed.mean_over_ranks(torch.stack(list(self.sums.values()))).tolist()
        means = {k: v / self.counts[k] for k, v in zip(self.sums, values)}
        self.sums, self.counts = {}, {}
        return means
