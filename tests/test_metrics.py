"""Each metric against a case whose answer is known in closed form."""
import math

import pytest
import torch

from ganctl.evaluation import metrics


def gaussian(n, dim, mean=0.0, std=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g) * std + mean


def normal_cdf(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_fid_of_shifted_gaussians_is_the_squared_mean_distance():
    # Equal covariances: FID = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2) = |mu1 - mu2|^2.
    real = gaussian(20_000, 4, seed=1)
    shift = torch.tensor([1.0, 0.5, 0.0, 0.0])
    fake = gaussian(20_000, 4, seed=2) + shift
    assert metrics.fid(real, fake) == pytest.approx(shift.pow(2).sum().item(), abs=0.03)


def test_fid_of_scaled_gaussians_counts_the_covariance_term():
    # S1 = I, S2 = 4I in d dims: Tr(I + 4I - 2*2I) = d.
    real, fake = gaussian(20_000, 3, seed=1), gaussian(20_000, 3, std=2.0, seed=2)
    assert metrics.fid(real, fake) == pytest.approx(3.0, abs=0.1)


def test_fid_with_fewer_samples_than_features_is_exact():
    # Two points each in 5 dims: real {e1, -e1} (mean 0, S1 = 2 e1 e1^T), fake {2 e1 + c, -2 e1 + c}
    # (mean c, S2 = 8 e1 e1^T): FID = |c|^2 + 2 + 8 - 2 sqrt(16) = |c|^2 + 2.
    e1, c = torch.eye(5)[0], torch.tensor([0.0, 1.0, 2.0, 0.0, 0.0])
    real, fake = torch.stack([e1, -e1]), torch.stack([2 * e1 + c, -2 * e1 + c])
    assert metrics.fid(real, fake) == pytest.approx(5.0 + 2.0, abs=1e-9)
    assert metrics.fid(fake, real) == pytest.approx(7.0, abs=1e-9)


@pytest.mark.parametrize("n_real, n_fake", [(30, 50), (50, 30), (200, 300)])
def test_fid_agrees_with_torchmetrics_on_either_side_of_the_feature_count(n_real, n_fake):
    from torchmetrics.image.fid import _compute_fid
    dim = 64  # 30/50 samples: fewer than the features; 200/300: more
    mix = gaussian(dim, dim, seed=3)
    real, fake = gaussian(n_real, dim, seed=1) @ mix, gaussian(n_fake, dim, seed=2) @ mix.T + 0.5
    r, f = real.double(), fake.double()
    expected = _compute_fid(r.mean(0), r.T.cov(), f.mean(0), f.T.cov()).item()
    assert metrics.fid(real, fake) == pytest.approx(expected, rel=1e-6)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    real = gaussian(2000, 8, seed=1)
    same, _ = metrics.kid(real, gaussian(2000, 8, seed=2), subsets=20, subset_size=500)
    other, _ = metrics.kid(real, gaussian(2000, 8, mean=1.0, seed=3), subsets=20, subset_size=500)
    assert abs(same) < 0.01
    assert other > 0.1


def test_inception_score_of_confident_even_predictions_is_the_class_count():
    # p(y|x) one-hot and p(y) uniform over 10 classes: KL = log 10, so IS = 10.
    logits = torch.full((1000, 10), -1e4)
    logits[torch.arange(1000), torch.arange(1000) % 10] = 0.0
    mean, _ = metrics.inception_score(logits, splits=1)
    assert mean == pytest.approx(10.0, rel=1e-4)
    # in 10 random splits each split's p(y) is only near uniform, so the score is a little lower
    assert 9.0 < metrics.inception_score(logits, splits=10)[0] < 10.0
    # one class only: p(y|x) = p(y), IS = 1
    # (and a class whose probability underflows to exactly 0 must not make it NaN)
    collapsed, _ = metrics.inception_score(torch.zeros(100, 10).index_fill_(1, torch.tensor([3]), 1e4))
    assert collapsed == pytest.approx(1.0, abs=1e-6)


def test_precision_recall_identical_sets_are_perfect_and_disjoint_sets_are_zero():
    x = gaussian(500, 5)
    assert metrics.precision_recall(x, x.clone()) == (1.0, 1.0)
    assert metrics.precision_recall(x, x + 100.0) == (0.0, 0.0)


def test_precision_recall_of_one_mode_out_of_two():
    # Reals in two far-apart clusters, fakes all in the first: every fake is realistic
    # (precision 1), but the fakes cover only half of the reals (recall 1/2).
    a, b = gaussian(400, 2, seed=1), gaussian(400, 2, mean=50.0, seed=2)
    real, fake = torch.cat([a, b]), gaussian(400, 2, seed=3)
    precision, recall = metrics.precision_recall(real, fake)
    assert precision > 0.95
    assert recall == pytest.approx(0.5, abs=0.03)


def test_density_coverage_same_distribution_about_one_and_mode_dropping_halves_coverage():
    real = gaussian(2000, 2, seed=1)
    density, coverage = metrics.density_coverage(real, gaussian(2000, 2, seed=2))
    assert density == pytest.approx(1.0, abs=0.1)  # E[density] = 1 for identical distributions
    assert coverage > 0.95
    two = torch.cat([gaussian(500, 2, seed=1), gaussian(500, 2, mean=50.0, seed=2)])
    _, half = metrics.density_coverage(two, gaussian(1000, 2, seed=3))
    assert half == pytest.approx(0.5, abs=0.03)


def test_label_tv_exact_on_hand_made_labels():
    # p = (1/2, 1/2, 0), q = (1/4, 1/2, 1/4): TV = (1/4 + 0 + 1/4) / 2 = 1/4
    p = torch.tensor([0, 0, 1, 1])
    q = torch.tensor([0, 1, 1, 2])
    assert metrics.label_tv(p, q, 3) == pytest.approx(0.25)
    assert metrics.label_tv(p, p, 3) == 0.0
    assert metrics.label_tv(torch.zeros(5, dtype=torch.long), torch.ones(7, dtype=torch.long), 3) == 1.0


def test_label_tv_of_samples_converges_to_the_closed_form():
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.3, 0.5])
    g = torch.Generator().manual_seed(0)
    sp = torch.multinomial(p, 200_000, replacement=True, generator=g)
    sq = torch.multinomial(q, 200_000, replacement=True, generator=g)
    assert metrics.label_tv(sp, sq, 3) == pytest.approx(0.5 * (p - q).abs().sum().item(), abs=0.01)


@pytest.mark.parametrize("delta", [0.0, 1.0, 2.0])
def test_c2st_bound_tracks_the_tv_of_two_gaussians(delta):
    # N(0, I) vs N(delta e1, I): TV = 2 Phi(delta / 2) - 1, reached by the best (linear) classifier.
    # The bound is a 95% lower confidence bound: below the truth, and close to it.
    tv = 2 * normal_cdf(delta / 2) - 1
    real = gaussian(4000, 6, seed=1)
    fake = gaussian(4000, 6, seed=2)
    fake[:, 0] += delta
    out = metrics.c2st_tv_bound(real, fake)
    assert out["n_test"] == 2000  # the last quarter of the 8000 pooled samples
    assert out["tv_lower"] <= tv + 0.01
    assert out["tv_lower"] >= tv - 0.1


def test_inception_score_of_uniform_predictions_is_one():
    # p(y|x) = p(y) for every x: KL = 0
    assert metrics.inception_score(torch.zeros(200, 10))[0] == pytest.approx(1.0)
