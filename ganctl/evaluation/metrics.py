"""Sample-quality metrics on feature vectors and class logits. Each function takes tensors of
real and generated features (N, F) on any device; none of them knows where the features came from.

FID is the formula of pytorch-fid and torchmetrics, in float64, with an exact shortcut where
there are fewer samples than features. KID is torchmetrics', fed with precomputed features through
an identity "feature extractor", so features are computed once and cached. Precision/recall
(Kynkaanniemi et al. 2019), density/coverage (Naeem et al. 2020) and the total-variation bounds
are written here: torchmetrics has no k-NN manifold metrics.
"""
import math
import warnings

import torch
from torch import nn

# torchmetrics is imported where KID is computed: importing it takes seconds (it brings
# scipy and torchvision's models), which a bad argument to `ganctl eval` should not wait for.


class Precomputed(nn.Module):
    """The identity, declared as a feature extractor of `num_features` outputs."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to the two feature sets:
    |mu_r - mu_f|^2 + tr S_r + tr S_f - 2 tr (S_r S_f)^1/2, in float64."""
    real, fake = real.double(), fake.to(real.device).double()
    mu_r, mu_f = real.mean(0), fake.mean(0)
    a = (real - mu_r) / math.sqrt(len(real) - 1)  # S_r = a^T a
    b = (fake - mu_f) / math.sqrt(len(fake) - 1)
    if min(len(a), len(b)) < a.shape[1]:
        # Fewer samples than features (Inception's 2048 on one class or a small folder): the nonzero
        # eigenvalues of S_r S_f = a^T a b^T b are those of the small (a b^T)(a b^T)^T. Exact, and
        # milliseconds where the d x d product takes seconds on a CPU.
        m = a @ b.T
        root_trace = torch.linalg.eigvalsh(m @ m.T if len(a) <= len(b) else m.T @ m).clamp(min=0).sqrt().sum()
    else:
        root_trace = torch.linalg.eigvals((a.T @ a) @ (b.T @ b)).sqrt().real.sum()  # as torchmetrics does
    return ((mu_r - mu_f).square().sum() + a.square().sum() + b.square().sum() - 2 * root_trace).item()


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel (cubic polynomial) MMD^2, unbiased, mean and std over random subsets."""
    from torchmetrics.image.kid import KernelInceptionDistance
    size = min(subset_size, len(real), len(fake))
    # sync_on_compute=False: the features are all in this process. Under torchrun rank 0 evaluates
    # alone, and torchmetrics would otherwise wait to gather features from the other ranks.
    with warnings.catch_warnings():  # that KID keeps all features in memory: known, and small here
        warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
        m = KernelInceptionDistance(feature=Precomputed(real.shape[1]), subsets=subsets, subset_size=size,
                                    sync_on_compute=False)
    m.update(real.cpu(), real=True)
    m.update(fake.cpu(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the subsets are drawn with the global generator
        mean, std = m.compute()
    return mean.item(), std.item()


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) from class logits, mean and std over `splits` random groups.
    Written here rather than taken from torchmetrics, whose 0 * log 0 gives NaN exactly when
    a collapsed generator leaves a class with probability 0."""
    p = logits.double().softmax(1).cpu()
    p = p[torch.randperm(len(p), generator=torch.Generator().manual_seed(seed))]
    scores = []
    for part in p.chunk(splits):
        marginal = part.mean(0, keepdim=True)
        kl = (torch.special.xlogy(part, part) - torch.special.xlogy(part, marginal)).sum(1)
        scores.append(kl.mean().exp())
    scores = torch.stack(scores)
    return scores.mean().item(), (scores.std().item() if len(scores) > 1 else 0.0)


def _kth_nn_radius(x: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row (N,)."""
    radii = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i:i + chunk], x)  # (c, N); the zero self-distance is the 1st smallest
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def _within(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048):
    """For each query, how many of the balls (centres, radii) contain it (Q,), and for each
    ball whether any query lies in it (C,)."""
    counts, hit = [], torch.zeros(len(centres), dtype=torch.bool, device=centres.device)
    for i in range(0, len(queries), chunk):
        inside = torch.cdist(queries[i:i + chunk], centres) <= radii[None, :]  # (c, C)
        counts.append(inside.sum(1))
        hit |= inside.any(0)
    return torch.cat(counts), hit


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Precision: share of fakes inside the real manifold (the union of k-NN balls around the
    reals); recall: share of reals inside the fake manifold (Kynkaanniemi et al. 2019)."""
    fake = fake.to(real.device)
    in_real, _ = _within(fake, real, _kth_nn_radius(real, k))
    in_fake, _ = _within(real, fake, _kth_nn_radius(fake, k))
    return (in_real > 0).float().mean().item(), (in_fake > 0).float().mean().item()


DENSITY_K = 5  # Naeem et al. 2020's k; precision and recall take 3, fewer neighbours


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = DENSITY_K) -> tuple[float, float]:
    """Density: mean number of real k-NN balls holding a fake, over k (about 1 when the fakes
    follow the real distribution); coverage: share of real balls holding at least one fake
    (Naeem et al. 2020)."""
    fake = fake.to(real.device)
    counts, hit = _within(fake, real, _kth_nn_radius(real, k))
    return counts.float().mean().item() / k, hit.float().mean().item()


def label_tv(labels_p: torch.Tensor, labels_q: torch.Tensor, num_classes: int) -> float:
    """Total variation between the two empirical label distributions, 1/2 sum_k |p_k - q_k|
    (exact for these samples; applied to a classifier's predictions it is the TV between the
    two image distributions seen through that classifier, a lower bound on their TV)."""
    return 0.5 * (label_shares(labels_p, num_classes) - label_shares(labels_q, num_classes)).abs().sum().item()


def label_shares(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The share of each class among `labels`: (num_classes,) float64 on the CPU."""
    return torch.bincount(labels.cpu(), minlength=num_classes).double() / len(labels)


def c2st_tv_bound(real: torch.Tensor, fake: torch.Tensor, steps: int = 300, seed: int = 0,
                  z: float = 1.645) -> dict:
    """Classifier two-sample test (Lopez-Paz & Oquab 2017). A classifier of real vs generated
    features is trained on half of each set, picked on a quarter, tested on the last quarter: its
    test accuracy a bounds TV >= 2a - 1, and with a's one-sided 95% lower confidence limit the
    bound holds with 95% confidence. Returns accuracy, the bound, and the test size."""
    g = torch.Generator().manual_seed(seed)
    n = min(len(real), len(fake))
    x = torch.cat([real[torch.randperm(len(real), generator=g)[:n]].cpu(),
                   fake[torch.randperm(len(fake), generator=g)[:n]].cpu()]).float()
    y = torch.cat([torch.ones(n), torch.zeros(n)])
    perm = torch.randperm(2 * n, generator=g)
    x, y = x[perm], y[perm]
    a, b = n, n + n // 2  # train [0, a), validation [a, b), test [b, 2n)
    mu, sd = x[:a].mean(0), x[:a].std(0).clamp_min(1e-6)
    x = (x - mu) / sd
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    best_val, best_state = -1.0, None
    for step in range(steps):
        with torch.enable_grad():  # callers may be under no_grad (evaluation)
            loss = nn.functional.binary_cross_entropy_with_logits(net(x[:a]).squeeze(1), y[:a])
            opt.zero_grad()
            loss.backward()
        opt.step()
        if step % 10 == 9:
            with torch.no_grad():
                val = ((net(x[a:b]).squeeze(1) > 0).float() == y[a:b]).float().mean().item()
            if val > best_val:  # model selection on validation data only: the test stays unseen
                best_val, best_state = val, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    with torch.no_grad():
        acc = ((net(x[b:]).squeeze(1) > 0).float() == y[b:]).float().mean().item()
    n_test = 2 * n - b
    acc_low = acc - z * math.sqrt(max(acc * (1 - acc), 1e-12) / n_test)
    return {"accuracy": acc, "tv_lower": max(0.0, 2 * acc_low - 1), "n_test": n_test}
