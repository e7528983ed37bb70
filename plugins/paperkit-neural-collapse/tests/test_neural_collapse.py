"""Neural-collapse metrics on hand-built geometries, the authors' formulas transcribed with NumPy/SciPy, the imbalanced
theorem's closed form against a direct minimization of its problem, the training objective, the train-set pass the
evaluate hook makes, and one end-to-end run of example.toml."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
from paperkit_neural_collapse import functional as F
from paperkit_neural_collapse.hooks import train_batches

EXAMPLE = Path(__file__).resolve().parent.parent / "example.toml"
K = 5


def _etf(k: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """k unit vectors in R^d forming a simplex ETF, randomly rotated."""
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=generator, dtype=torch.float64))
    centring = torch.eye(k, dtype=torch.float64) - 1.0 / k
    return math.sqrt(k / (k - 1)) * (q @ centring).T


def _orthonormal(k: int, d: int, generator: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=generator, dtype=torch.float64))
    return q.T


def _collapsed(means: torch.Tensor, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample of class k exactly at means[k]."""
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    return means[labels], labels


# -- perfect geometries ----------------------------------------------------------------------------
def test_simplex_etf_with_bias_scores_zero_on_every_etf_metric():
    g = torch.Generator().manual_seed(0)
    etf = _etf(K, 12, g)
    offset = torch.randn(12, generator=g, dtype=torch.float64)  # a global mean: the ETF is of the centred means
    h, y = _collapsed(3.0 * etf + offset, [7] * K)
    m = F.collapse_metrics(h, y, classifier=0.5 * etf)
    for name in ("nc1", "nc2_etf_h", "nc2_equinorm_h", "nc2_equiangular_h", "nc2_etf_w", "nc2_equinorm_w",
                 "nc2_equiangular_w", "nc3_duality", "nc3_etf_wh"):
        assert m[name] == pytest.approx(0.0, abs=1e-12), name
    # an ETF is not an orthogonal frame: the RMS cosine is 1/(K-1), the Gram distance √(2 − 2√((K−1)/K))
    assert m["orthogonality_w"] == pytest.approx(1.0 / (K - 1))
    assert m["nc2_orthogonal_w"] == pytest.approx(math.sqrt(2.0 - 2.0 * math.sqrt((K - 1) / K)))


def test_orthogonal_frame_scores_zero_on_every_orthogonal_metric():
    """Balanced bias-free MSE: uncentred means and classifier rows an orthogonal frame of equal lengths."""
    g = torch.Generator().manual_seed(1)
    frame = _orthonormal(K, 9, g)
    h, y = _collapsed(2.0 * frame, [4] * K)
    m = F.collapse_metrics(h, y, classifier=0.7 * frame)
    for name in ("nc1", "nc2_orthogonal_h", "orthogonality_h", "nc2_orthogonal_w", "orthogonality_w",
                 "nc3_duality_uncentred", "nc3_orthogonal_wh", "nc2_equinorm_w"):
        assert m[name] == pytest.approx(0.0, abs=1e-12), name
    assert m["alignment"] == pytest.approx(1.0)
    # equal-norm orthogonal means, once centred, form a simplex ETF
    assert m["nc2_etf_h"] == pytest.approx(0.0, abs=1e-12)
    assert m["nc2_etf_w"] == pytest.approx(math.sqrt(2.0 - 2.0 * math.sqrt((K - 1) / K)))


def test_the_theorems_imbalanced_geometry_scores_as_predicted():
    """A general orthogonal frame with the theorem's lengths (M = 1): every GOF distance 0, the lengths ordered."""
    counts, lw, lh = [40, 25, 12, 8, 5], 2e-3, 1e-3
    geometry = F.imbalanced_mse_geometry(counts, lw, lh, depth=1)
    frame = _orthonormal(K, 7, torch.Generator().manual_seed(2))
    means = geometry.features.sqrt().unsqueeze(1) * frame
    w = geometry.classifier.sqrt().unsqueeze(1) * frame
    h, y = _collapsed(means, counts)
    assert F.gof_distance(w, geometry.classifier) == pytest.approx(0.0, abs=1e-12)
    assert F.gof_distance(means, geometry.features) == pytest.approx(0.0, abs=1e-12)
    assert F.product_gof_distance(w, means, geometry.product) == pytest.approx(0.0, abs=1e-12)
    m = F.collapse_metrics(h, y, classifier=w)
    assert m["nc1"] == pytest.approx(0.0, abs=1e-12)
    assert m["orthogonality_h"] == pytest.approx(0.0, abs=1e-12)
    assert m["orthogonality_w"] == pytest.approx(0.0, abs=1e-12)
    p = geometry.product  # W H̄ is diagonal, but not a multiple of the identity
    expected = float(torch.linalg.vector_norm(p / p.norm() - 1.0 / math.sqrt(K)))
    assert m["nc3_orthogonal_wh"] == pytest.approx(expected)
    assert m["alignment"] == pytest.approx(1.0)
    assert m["size_norm_corr_w"] == pytest.approx(1.0)  # the larger the class, the longer its classifier row
    assert m["size_norm_corr_h"] == pytest.approx(-1.0)  # ... and the shorter its feature mean
    assert m["norm_ratio_slope"] == pytest.approx(1.0)  # ‖w_k‖²/‖h̄_k‖² = n_k λ_H/λ_W
    # unequal lengths are far from the equal-length frame the balanced metric assumes
    assert m["nc2_orthogonal_w"] > 0.1


def test_random_features_score_far_from_collapse():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(200, 16, generator=g, dtype=torch.float64)
    y = torch.arange(200) % K
    w = torch.randn(K, 16, generator=g, dtype=torch.float64)
    m = F.collapse_metrics(h, y, classifier=w)
    assert m["nc1"] > 1.0  # within-class spread dwarfs the tiny between-class spread of random means
    assert m["nc2_etf_w"] > 0.2 and m["nc3_duality"] > 1.0 and m["nc3_etf_wh"] > 0.5
    assert m["orthogonality_h"] > 0.2 and abs(m["alignment"]) < 0.5


def test_nc1_by_hand():
    """1-D, two classes at ±1 with spread ±a: Σ_W = a², Σ_B = 1, NC1 = a² / 2."""
    a = 0.3
    h = torch.tensor([[-1 - a], [-1 + a], [1 - a], [1 + a]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    assert F.nc1(F.class_statistics(h, y)) == pytest.approx(a**2 / 2)


def test_metrics_ignore_scale_rotation_and_absent_classes():
    g = torch.Generator().manual_seed(4)
    h = torch.randn(150, 12, generator=g, dtype=torch.float64) + 2.0 * torch.randn(3, 12, generator=g).double()[
        torch.arange(150) % 3
    ]
    y = 2 * (torch.arange(150) % 3)  # labels 0, 2, 4 of a 6-class head
    w = torch.randn(6, 12, generator=g, dtype=torch.float64)
    sizes = torch.tensor([50, 9, 50, 9, 50, 9])
    base = F.collapse_metrics(h, y, classifier=w, class_sizes=sizes)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    for scaled in (
        F.collapse_metrics(7.5 * h, y, classifier=0.01 * w, class_sizes=sizes),
        F.collapse_metrics(h @ q, y, classifier=w @ q, class_sizes=sizes),
    ):
        for name, value in base.items():
            assert scaled[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    # rows 1, 3, 5 of the head belong to classes the set does not have: they are not used
    only = F.collapse_metrics(h, y // 2, classifier=w[[0, 2, 4]], class_sizes=sizes[[0, 2, 4]])
    for name, value in base.items():
        assert only[name] == pytest.approx(value, rel=1e-12, abs=1e-14), name
    assert F.collapse_metrics(h, torch.zeros(150, dtype=torch.long), classifier=w) == {}


# -- the authors' formulas, transcribed with NumPy / SciPy ---------------------------------------------
def _authors_nc(h: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """validate_NC.py's NC1, NC2_ETF_W, NC2_Identity_W, NC2_ETF_H, NC3_ETF_WH and NC3_W_sub_H(_centered), written
    again with NumPy (the class means and Σ_W divide by the class and set sizes, Σ_B by K, pinv is SciPy's)."""
    k = w.shape[0]
    mu_g = h.mean(0)
    mu = np.stack([h[y == c].mean(0) for c in range(k)])
    sigma_w = sum(np.outer(r, r) for c in range(k) for r in h[y == c] - mu[c]) / len(h)
    sigma_b = sum(np.outer(m - mu_g, m - mu_g) for m in mu) / k
    etf = (np.eye(k) - np.ones((k, k)) / k) / np.sqrt(k - 1)

    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.linalg.norm(a)

    centred = mu - mu_g
    return {
        "nc1": float(np.trace(sigma_w @ scipy.linalg.pinv(sigma_b)) / k),
        "nc2_etf_w": float(np.linalg.norm(unit(w @ w.T) - etf)),
        "nc2_orthogonal_w": float(np.linalg.norm(unit(w @ w.T) - np.eye(k) / np.sqrt(k))),
        "nc2_etf_h": float(np.linalg.norm(unit(centred @ centred.T) - etf)),
        "nc2_orthogonal_h": float(np.linalg.norm(unit(mu @ mu.T) - np.eye(k) / np.sqrt(k))),
        "nc3_etf_wh": float(np.linalg.norm(unit(w @ centred.T) - etf)),
        "nc3_orthogonal_wh": float(np.linalg.norm(unit(w @ mu.T) - np.eye(k) / np.sqrt(k))),
        "nc3_duality": float(np.linalg.norm(unit(w) - unit(centred))),
        "nc3_duality_uncentred": float(np.linalg.norm(unit(w) - unit(mu))),
    }


@pytest.mark.parametrize("counts,d", [([30, 30, 30, 30], 6), ([60, 31, 17, 9, 4], 8), ([12, 40, 25], 3)])
def test_metrics_equal_the_authors_formulas(counts: list[int], d: int):
    g = torch.Generator().manual_seed(sum(counts))
    k = len(counts)
    y = torch.cat([torch.full((c,), j) for j, c in enumerate(counts)])
    h = torch.randn(len(y), d, generator=g, dtype=torch.float64) + 1.5 * torch.randn(k, d, generator=g).double()[y]
    w = torch.randn(k, d, generator=g, dtype=torch.float64)
    ours = F.collapse_metrics(h, y, classifier=w)
    theirs = _authors_nc(h.numpy(), y.numpy(), w.numpy())
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_rank_correlation_and_log_slope_match_scipy_and_closed_forms():
    g = torch.Generator().manual_seed(5)
    a = torch.tensor([5.0, 3.0, 3.0, 9.0, 1.0, 3.0])  # ties
    b = torch.randn(6, generator=g)
    assert F.rank_correlation(a, b) == pytest.approx(scipy.stats.spearmanr(a.numpy(), b.numpy())[0])
    assert F.rank_correlation(a, torch.ones(6)) == 0.0
    x = torch.tensor([2.0, 5.0, 11.0, 40.0])
    assert F.log_slope(x, 3.0 * x**0.75) == pytest.approx(0.75)


# -- the imbalanced theorem ------------------------------------------------------------------------------
def _minimize_ufm(counts: list[int], lw: float, lh: float, depth: int, d: int = 8):
    """Direct minimization of 1/(2N)‖W_M···W_1 H − Y‖² + λ_W/2 Σ‖W_m‖² + λ_H/2 ‖H‖² (L-BFGS, float64)."""
    torch.manual_seed(0)
    k, n = len(counts), sum(counts)
    y = torch.cat([torch.full((c,), j) for j, c in enumerate(counts)])
    target = torch.nn.functional.one_hot(y, k).double()
    h = (0.1 * torch.randn(n, d, dtype=torch.float64)).requires_grad_()
    ws = [(0.3 * torch.randn(d, d, dtype=torch.float64)).requires_grad_() for _ in range(depth - 1)]
    ws.append((0.3 * torch.randn(k, d, dtype=torch.float64)).requires_grad_())
    opt = torch.optim.LBFGS([h, *ws], max_iter=4000, tolerance_grad=1e-12, tolerance_change=1e-16,
                            history_size=50, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        opt.zero_grad()
        z = h
        for w in ws:
            z = z @ w.T
        loss = (z - target).pow(2).sum() / (2 * n) + lw / 2 * sum(w.pow(2).sum() for w in ws) + lh / 2 * h.pow(2).sum()
        loss.backward()
        return loss

    for _ in range(4):
        opt.step(objective)
    product = ws[0]
    for w in ws[1:]:
        product = w @ product
    return h.detach(), y, product.detach()


@pytest.mark.parametrize("depth", [1, 2])
def test_closed_form_equals_the_minimizer_of_the_problem(depth: int):
    counts, lw, lh = [20, 10, 5, 5], 3e-3, 3e-3
    h, y, w = _minimize_ufm(counts, lw, lh, depth)
    stats = F.class_statistics(h, y)
    geometry = F.imbalanced_mse_geometry(counts, lw, lh, depth)
    assert F.nc1(stats) < 1e-10
    torch.testing.assert_close(w.pow(2).sum(1), geometry.classifier, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(stats.means.pow(2).sum(1), geometry.features, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close((w * stats.means).sum(1), geometry.product, rtol=1e-5, atol=1e-8)
    assert F.gof_distance(w, geometry.classifier) < 1e-5
    assert F.gof_distance(stats.means, geometry.features) < 1e-5
    assert F.product_gof_distance(w, stats.means, geometry.product) < 1e-5


def test_closed_form_by_hand_for_one_layer():
    counts, lw, lh = torch.tensor([50.0, 20.0, 8.0], dtype=torch.float64), 1e-3, 4e-3
    n = float(counts.sum())
    geometry = F.imbalanced_mse_geometry(counts, lw, lh, depth=1)
    b = n * n * lw * lh
    torch.testing.assert_close(geometry.x, (counts / b).sqrt() - 1)
    torch.testing.assert_close(geometry.ratio, counts * lh / lw)
    torch.testing.assert_close(geometry.product, 1 - n * (lw * lh / counts).sqrt())


def test_minority_collapse_below_the_threshold():
    """A class too small for the regularization has x = 0: its classifier row and feature mean vanish, as they do
    at the problem's minimizer (M = 1: when √n_k ≤ N √(λ_W λ_H))."""
    counts, lw, lh = [200, 100, 1], 5e-3, 5e-3  # N √(λ_W λ_H) = 1.505 > √1
    geometry = F.imbalanced_mse_geometry(counts, lw, lh, depth=1)
    assert geometry.x[2] == 0.0 and geometry.classifier[2] == 0.0 and geometry.features[2] == 0.0
    assert bool((geometry.x[:2] > 0).all())
    h, y, w = _minimize_ufm(counts, lw, lh, depth=1)
    assert float(w[2].norm()) < 1e-4 and float(F.class_statistics(h, y).means[2].norm()) < 1e-4
    with pytest.raises(ValueError):
        F.imbalanced_mse_geometry(counts, 0.0, lh)


# -- the training objective ----------------------------------------------------------------------------------
def test_one_hot_mse_scales():
    g = torch.Generator().manual_seed(6)
    z = torch.randn(8, 4, generator=g)
    y = torch.randint(0, 4, (8,), generator=g)
    target = torch.nn.functional.one_hot(y, 4).float()
    # the paper's 1/(2N)‖Z − Y‖²_F, and the authors' training scripts' nn.MSELoss()(out, one_hot) / 2
    assert F.one_hot_mse(z, target, "sum").mean() == pytest.approx(float((z - target).pow(2).sum() / 16), rel=1e-6)
    assert F.one_hot_mse(z, target, "mean").mean() == pytest.approx(float(torch.nn.MSELoss()(z, target) / 2), rel=1e-6)


def test_feature_penalty_on_a_full_batch_is_the_papers_term():
    h = torch.randn(30, 5, generator=torch.Generator().manual_seed(7))
    assert F.feature_penalty(h, 1e-3, 30).mean() == pytest.approx(float(1e-3 / 2 * h.pow(2).sum()), rel=1e-6)


# -- the hook's pass over the training set ----------------------------------------------------------------------
class _Set:
    def __init__(self, n: int) -> None:
        self.x, self.y = torch.arange(n).float().unsqueeze(1), torch.arange(n)

    def __len__(self) -> int:
        return len(self.y)


@pytest.mark.parametrize("n,batch,world", [(10, 4, 1), (10, 4, 3), (7, 8, 2), (5, 2, 4)])
def test_train_batches_cover_the_set_once_in_order(n: int, batch: int, world: int):
    """The processes' shares, gathered rank after rank per batch and without the padding, are the set in order."""
    shares = [list(train_batches(_Set(n), batch, rank, world)) for rank in range(world)]
    seen = []
    for step in zip(*shares):
        assert len({len(b["y"]) for b in step}) == 1  # equal lengths: what gather needs
        for b in step:
            seen.extend(b["y"][b["valid"]].tolist())
    assert seen == list(range(n))


# -- end to end ----------------------------------------------------------------------------------------------
def test_example_plan_runs(run_plan) -> None:  # noqa: ANN001 - the paperkit.testing fixture
    results, manifest = run_plan(EXAMPLE.read_text(encoding="utf-8"))
    assert results["status"] == "completed"
    assert {"neural-collapse", "neural-collapse-mse", "neural-collapse-feature-decay"} <= set(manifest["methods"])
    initial, final = results["initial"], results["final"]
    assert final["neural-collapse/train/nc1"] < initial["neural-collapse/train/nc1"]
    assert "neural-collapse/test/nc1" in final
    summary = results["summary"]["neural-collapse"]
    assert summary["train_sizes"] == sorted(summary["train_sizes"], reverse=True)  # long-tail: class 0 largest
    assert len(summary["classifier_norms"]) == len(summary["classes"]) == 10
