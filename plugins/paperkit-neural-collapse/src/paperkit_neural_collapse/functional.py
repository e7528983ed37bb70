"""Neural-collapse measurements and the bias-free imbalanced MSE geometry, as plain functions.

Notation of Dang et al. (ICML 2023) and Papyan, Han & Donoho (PNAS 2020): ``K`` classes, ``n_k`` training samples
of class ``k`` (``N = Σ n_k``), last-layer features ``h_i`` with class means ``h̄_k`` (``μ_k`` in Papyan et al.),
global mean ``μ_G = (1/N) Σ_i h_i``, classifier ``W`` (``K × d``, row ``w_k``; for a deep linear head the product
``W_M ··· W_1``). Every measurement is computed in float64 and is invariant to a common rescaling of the features
and of the classifier (the NC metrics of both papers are normalized), so it compares runs of any scale.

- NC1, variability collapse: ``tr(Σ_W Σ_B^†) / K`` (Papyan et al.; the authors' ``validate_NC*.py``).
- NC2, the geometry of the class means and of the classifier rows: the distance of the normalized Gram matrix to a
  simplex ETF (balanced data with a bias), to an orthogonal frame (balanced, bias-free: the paper's result for the
  bias-free MSE case), or to a general orthogonal frame whose lengths depend on ``n_k`` (imbalanced, bias-free MSE:
  the paper's imbalanced theorem, :func:`imbalanced_mse_geometry`).
- NC3, self-duality: the distance between the normalized classifier and the normalized class means, and the
  distance of ``W H̄`` to its predicted form.

The closed forms of the imbalanced theorem follow the authors' ``compute_x`` / ``compute_s`` in
``synthetic_experiment_imbalanced.py`` (Fsoft-AIC/Neural-Collapse-in-Deep-Linear-Networks); the tests check them
against a direct minimization of the regularized problem.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


# -- class statistics ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassStatistics:
    """First and second moments of features by class, in float64, over the classes that have samples.

    ``classes`` are the label values kept (ascending), ``counts[j]`` the number of samples of ``classes[j]``,
    ``means[j]`` their mean feature ``h̄_k``, ``global_mean`` the mean over all samples (``μ_G``, weighted by the
    counts as in Papyan et al. and the authors' code) and ``within`` the within-class covariance
    ``Σ_W = (1/N) Σ_i (h_i − h̄_{y_i})(h_i − h̄_{y_i})ᵀ``.
    """

    classes: torch.Tensor
    counts: torch.Tensor
    means: torch.Tensor
    global_mean: torch.Tensor
    within: torch.Tensor

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def centred_means(self) -> torch.Tensor:
        """``h̄_k − μ_G``, one row per class (``M`` of Papyan et al.)."""
        return self.means - self.global_mean

    @property
    def between(self) -> torch.Tensor:
        """``Σ_B = (1/K) Σ_k (h̄_k − μ_G)(h̄_k − μ_G)ᵀ`` (Papyan et al. and the authors' ``compute_Sigma_B``: an unweighted mean over classes)."""
        centred = self.centred_means
        return centred.T @ centred / self.num_classes


def class_statistics(features: torch.Tensor, labels: torch.Tensor) -> ClassStatistics:
    """Class counts, class means, global mean and within-class covariance of ``features`` (N × d) by ``labels``."""
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
        raise ValueError(f"features must be (N, d) and labels (N,); got {tuple(features.shape)}, {tuple(labels.shape)}")
    if len(features) == 0:
        raise ValueError("no samples")
    h = features.detach().to(torch.float64)
    y = labels.detach().long()
    classes, inverse, counts = torch.unique(y, sorted=True, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(classes), h.shape[1], dtype=torch.float64, device=h.device).index_add_(0, inverse, h)
    means = sums / counts.unsqueeze(1).to(torch.float64)
    residual = h - means[inverse]
    within = residual.T @ residual / len(h)
    return ClassStatistics(classes, counts, means, h.mean(0), within)


# -- NC1 -----------------------------------------------------------------------------------------
def nc1(stats: ClassStatistics) -> float:
    """Variability collapse ``tr(Σ_W Σ_B^†) / K`` (Papyan et al.; the authors' ``validate_NC*.py``; 0 at collapse).

    The pseudo-inverse keeps the eigenvalues of ``Σ_B`` above ``max(d, K)·ε·λ_max`` (NumPy's and SciPy's default
    cut-off, as the authors' ``scipy.linalg.pinv``); ``Σ_B`` has rank at most ``K − 1``.
    """
    between = stats.between
    values, vectors = torch.linalg.eigh(between)
    cutoff = values.abs().max() * max(between.shape[0], stats.num_classes) * torch.finfo(torch.float64).eps
    keep = values > cutoff
    if not bool(keep.any()):
        return math.inf
    inverse = (vectors[:, keep] / values[keep]) @ vectors[:, keep].T
    return float(torch.trace(stats.within @ inverse) / stats.num_classes)


# -- Gram-matrix geometries (NC2) ------------------------------------------------------------------
def _unit(matrix: torch.Tensor) -> torch.Tensor:
    norm = torch.linalg.matrix_norm(matrix)
    return matrix / norm if norm > 0 else matrix


def simplex_etf(num_classes: int) -> torch.Tensor:
    """The Gram matrix of a simplex ETF normalized to unit Frobenius norm: ``(I − 11ᵀ/K) / √(K − 1)``."""
    K = num_classes
    return (torch.eye(K, dtype=torch.float64) - 1.0 / K) / math.sqrt(K - 1)


def etf_distance(vectors: torch.Tensor) -> float:
    """``‖ V Vᵀ/‖V Vᵀ‖_F − (I − 11ᵀ/K)/√(K−1) ‖_F`` for the rows of ``vectors`` (K × d): 0 for a simplex ETF.

    The authors' ``compute_NC2_ETF_W`` (on ``W``) and ``compute_NC2_ETF_H`` (on the centred means); the geometry of
    balanced data with a last-layer bias (the paper's balanced theorems).
    """
    v = vectors.detach().to(torch.float64)
    return float(torch.linalg.matrix_norm(_unit(v @ v.T) - simplex_etf(len(v)).to(v.device)))


def gof_distance(vectors: torch.Tensor, lengths: torch.Tensor | None = None) -> float:
    """``‖ V Vᵀ/‖V Vᵀ‖_F − D/‖D‖_F ‖_F`` with ``D = diag(lengths)``: 0 when the rows are orthogonal with those squared
    lengths (a general orthogonal frame, GOF: the paper's imbalanced theorem).

    ``lengths = None`` compares with the identity (an orthogonal frame of equal lengths: the authors'
    ``compute_NC2_Identity_W`` / ``_H``, the geometry of balanced bias-free MSE); the predicted lengths of
    the imbalanced theorem (:func:`imbalanced_mse_geometry`) give the authors' ``compute_NC2_W_GOF`` / ``_H_GOF``.
    """
    v = vectors.detach().to(torch.float64)
    d = torch.ones(len(v), dtype=torch.float64) if lengths is None else lengths.detach().to(torch.float64)
    return float(torch.linalg.matrix_norm(_unit(v @ v.T) - _unit(torch.diag(d)).to(v.device)))


def _cosines(vectors: torch.Tensor) -> torch.Tensor:
    v = vectors.detach().to(torch.float64)
    unit = v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    return unit @ unit.T


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    K = len(matrix)
    return matrix[~torch.eye(K, dtype=torch.bool, device=matrix.device)]


def orthogonality(vectors: torch.Tensor) -> float:
    """Root-mean-square cosine between distinct rows: 0 for any orthogonal frame whatever the lengths, ``1/(K−1)`` for
    a simplex ETF, 1 for parallel rows.

    A length-free test of the paper's imbalanced bias-free geometry (orthogonal ``w_k`` and orthogonal uncentred
    ``h̄_k``), usable when the regularization the closed-form lengths need is not known (a real network).
    """
    return float(_off_diagonal(_cosines(vectors)).pow(2).mean().sqrt())


def equinorm(vectors: torch.Tensor) -> float:
    """``std_k ‖v_k‖ / mean_k ‖v_k‖`` (Papyan et al., Fig. 2: equinorm of the centred means and of the classifiers)."""
    norms = vectors.detach().to(torch.float64).norm(dim=1)
    return float(norms.std(unbiased=True) / norms.mean())


def equiangularity(vectors: torch.Tensor) -> float:
    """``mean_{k≠l} |cos(v_k, v_l) + 1/(K−1)|`` (Papyan et al., Fig. 4: equiangularity; 0 for a simplex ETF)."""
    K = len(vectors)
    return float((_off_diagonal(_cosines(vectors)) + 1.0 / (K - 1)).abs().mean())


# -- NC3 ------------------------------------------------------------------------------------------
def self_duality(classifier: torch.Tensor, means: torch.Tensor) -> float:
    """``‖ W/‖W‖_F − H̄ᵀ/‖H̄‖_F ‖_F`` with the class means as rows of ``means`` (0 when ``w_k ∝ h̄_k`` with one
    common factor). Papyan et al.'s NC3 on centred means (the authors' ``compute_NC3_W_sub_H_centered``), on
    uncentred ones for a bias-free model (``compute_NC3_W_sub_H``)."""
    w = classifier.detach().to(torch.float64)
    m = means.detach().to(torch.float64).to(w.device)
    return float(torch.linalg.matrix_norm(_unit(w) - _unit(m)))


def product_etf_distance(classifier: torch.Tensor, means: torch.Tensor) -> float:
    """``‖ W H̄/‖W H̄‖_F − (I − 11ᵀ/K)/√(K−1) ‖_F`` (the authors' ``compute_NC3_ETF_WH``; the columns of ``H̄`` are
    the rows of ``means``)."""
    w = classifier.detach().to(torch.float64)
    m = means.detach().to(torch.float64).to(w.device)
    return float(torch.linalg.matrix_norm(_unit(w @ m.T) - simplex_etf(len(w)).to(w.device)))


def product_gof_distance(classifier: torch.Tensor, means: torch.Tensor, diagonal: torch.Tensor | None = None) -> float:
    """``‖ W H̄/‖W H̄‖_F − D/‖D‖_F ‖_F``, ``D = diag(diagonal)`` or the identity (the authors' ``compute_NC3_WH``
    and ``compute_NC3_Identity_WH``): 0 when each classifier row sees only its own class mean."""
    w = classifier.detach().to(torch.float64)
    m = means.detach().to(torch.float64).to(w.device)
    d = torch.ones(len(w), dtype=torch.float64) if diagonal is None else diagonal.detach().to(torch.float64)
    return float(torch.linalg.matrix_norm(_unit(w @ m.T) - _unit(torch.diag(d)).to(w.device)))


def alignment(classifier: torch.Tensor, means: torch.Tensor) -> float:
    """``mean_k cos(w_k, h̄_k)``: 1 when every classifier row points along its class mean, whatever the lengths
    (the paper's imbalanced NC3, ``w_k ∝ h̄_k`` with class-dependent factors)."""
    w = classifier.detach().to(torch.float64)
    m = means.detach().to(torch.float64).to(w.device)
    return float(torch.nn.functional.cosine_similarity(w, m, dim=1).mean())


# -- class size against lengths ------------------------------------------------------------------
def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n with ties given their mean rank."""
    v = values.detach().to(torch.float64).flatten()
    order = torch.argsort(v, stable=True)
    ranks = torch.empty_like(v)
    ranks[order] = torch.arange(1, len(v) + 1, dtype=torch.float64, device=v.device)
    for value in torch.unique(v):
        tied = v == value
        if int(tied.sum()) > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation (Pearson correlation of the tie-averaged ranks); 0 when either side is constant."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = ra.norm() * rb.norm()
    return float((ra @ rb) / denominator) if denominator > 0 else 0.0


def log_slope(x: torch.Tensor, y: torch.Tensor) -> float:
    """Least-squares slope of ``log y`` on ``log x`` (``y ∝ x^slope``); 0 when ``x`` is constant."""
    lx, ly = x.detach().to(torch.float64).log(), y.detach().to(torch.float64).log()
    lx = lx - lx.mean()
    denominator = lx @ lx
    return float((lx @ (ly - ly.mean())) / denominator) if denominator > 0 else 0.0


# -- the imbalanced theorem ------------------------------------------------------------------------
@dataclass(frozen=True)
class ImbalancedGeometry:
    """The global minimizer's geometry for bias-free MSE on imbalanced data (Dang et al.'s imbalanced theorem), per class.

    ``x`` solves the theorem's scalar equation, ``s`` are the singular values of each linear layer along class
    ``k``'s direction (``s_k^{2M} = N λ_H x_k^M``), and up to the common rotation every global minimizer has
    ``W Wᵀ = diag(classifier)`` (``W = W_M···W_1``), ``H̄ᵀH̄ = diag(features)`` (uncentred class means, one per
    column), ``W H̄ = diag(product)`` and ``‖w_k‖² / ‖h̄_k‖² = ratio_k``. A class with ``x_k = 0`` has collapsed to
    zero (minority collapse): its classifier and its features vanish.
    """

    x: torch.Tensor
    s: torch.Tensor
    classifier: torch.Tensor
    features: torch.Tensor
    product: torch.Tensor
    ratio: torch.Tensor


def _largest_root(c: float, depth: int) -> float:
    """The largest ``x ≥ 0`` with ``M x^{M−1} / (x^M + 1)² = c`` (0 when there is none: the class collapses)."""
    M = depth

    def g(x: float) -> float:
        return M * x ** (M - 1) / (x**M + 1.0) ** 2

    peak = 0.0 if M == 1 else ((M - 1) / (M + 1)) ** (1.0 / M)  # g rises on [0, peak], falls after it
    if g(peak) < c:
        return 0.0
    if M == 1:
        return max(0.0, 1.0 / math.sqrt(c) - 1.0)  # 1/(x+1)² = c in closed form
    lo, hi = peak, max(2.0 * peak, 1.0)
    while g(hi) > c:
        hi *= 2.0
    for _ in range(200):  # bisection on the falling branch, to float64 resolution
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if g(mid) > c else (lo, mid)
    return 0.5 * (lo + hi)


def imbalanced_mse_geometry(
    counts: Sequence[int] | torch.Tensor, weight_decay: float, feature_decay: float, depth: int = 1
) -> ImbalancedGeometry:
    """The theorem's closed form for ``min 1/(2N)‖W_M···W_1 H − Y‖²_F + λ_W/2 Σ_m ‖W_m‖²_F + λ_H/2 ‖H‖²_F``.

    ``counts`` are the ``n_k``; ``weight_decay`` is ``λ_W``, ``feature_decay`` ``λ_H``, ``depth`` the number ``M``
    of linear layers. With ``b = M N (N λ_W^M λ_H)^{1/M}``, ``x_k`` is the largest root of
    ``b / n_k = M x^{M−1} / (x^M + 1)²`` (0 if none), ``s_k^{2M} = N λ_H x_k^M``; then ``‖w_k‖² ∝ s_k^{2M}``,
    ``‖h̄_k‖² ∝ s_k^{2M} / (s_k^{2M} + N λ_H)²`` and ``w_kᵀh̄_k ∝ s_k^{2M} / (s_k^{2M} + N λ_H)`` (the authors'
    ``compute_x``, ``compute_s``, ``compute_NC2_W``, ``compute_NC2_H``, ``compute_NC3_WH``). For ``M = 1`` these are
    ``x_k = √(n_k / b) − 1``, ``‖w_k‖² / ‖h̄_k‖² = n_k λ_H / λ_W`` and ``w_kᵀh̄_k = 1 − N√(λ_W λ_H / n_k)``.
    The returned values are exact, not only up to a factor: ``classifier = s^{2M}`` (the product's squared row
    norms), ``features = s^{2M} / (s^{2M} + Nλ_H)²``, ``product = s^{2M} / (s^{2M} + Nλ_H)``.
    """
    n = torch.as_tensor(counts, dtype=torch.float64).flatten()
    if depth < 1 or weight_decay <= 0 or feature_decay <= 0 or bool((n <= 0).any()):
        raise ValueError("need depth >= 1, positive weight_decay and feature_decay, and positive counts")
    M, N = depth, float(n.sum())
    b = M * N * (N * weight_decay**M * feature_decay) ** (1.0 / M)
    x = torch.tensor([_largest_root(b / float(nk), M) for nk in n], dtype=torch.float64)
    s2m = N * feature_decay * x**M
    s = s2m ** (1.0 / (2 * M))
    shifted = s2m + N * feature_decay
    features = s2m / shifted**2
    ratio = torch.where(s2m > 0, shifted**2, torch.zeros_like(s2m))
    return ImbalancedGeometry(x=x, s=s, classifier=s2m, features=features, product=s2m / shifted, ratio=ratio)


# -- the training objective ---------------------------------------------------------------------------
def one_hot_mse(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Per-sample squared error against (soft or one-hot) targets: ``½ Σ_k (z_k − y_k)²`` (``reduction = "sum"``,
    the paper's ``1/(2N) ‖W H − Y‖²_F`` per sample: the paper's training problem) or ``½ mean_k (z_k − y_k)²`` (``"mean"``: the
    authors' training scripts, ``nn.MSELoss()(out, one_hot) / 2``)."""
    squared = (logits - targets.to(logits.dtype)).pow(2)
    per_sample = squared.sum(-1) if reduction == "sum" else squared.mean(-1)
    return 0.5 * per_sample


def feature_penalty(features: torch.Tensor, feature_decay: float, dataset_size: int) -> torch.Tensor:
    """Per-sample share of ``λ_H/2 ‖H‖²_F``: ``N λ_H/2 ‖h_i‖²``, whose mean over a batch estimates the full-data sum
    (the authors' ``lamb_feature * torch.sum(features ** 2)`` on a full batch, ``--sep_decay``)."""
    return 0.5 * feature_decay * dataset_size * features.pow(2).flatten(1).sum(-1)


# -- everything at once -------------------------------------------------------------------------------
def collapse_metrics(
    features: torch.Tensor,
    labels: torch.Tensor,
    classifier: torch.Tensor | None = None,
    class_sizes: torch.Tensor | None = None,
) -> dict[str, float]:
    """Every NC measurement of one set of features (``{name: value}``; see the README for the table).

    ``classifier`` is the ``C × d`` last-layer weight (rows are indexed by label value; only the classes present
    in ``labels`` are used); ``class_sizes`` the training counts ``n_k`` indexed by label value (default: the
    counts in ``labels``), against which the lengths are ranked. Fewer than two classes give ``{}``.
    """
    if len(labels) == 0:
        return {}
    stats = class_statistics(features, labels)
    if stats.num_classes < 2:
        return {}
    means, centred = stats.means, stats.centred_means
    sizes = stats.counts.to(torch.float64) if class_sizes is None else class_sizes.to(torch.float64)[stats.classes]
    out = {
        "nc1": nc1(stats),
        "nc2_etf_h": etf_distance(centred),
        "nc2_equinorm_h": equinorm(centred),
        "nc2_equiangular_h": equiangularity(centred),
        "nc2_orthogonal_h": gof_distance(means),
        "orthogonality_h": orthogonality(means),
        "size_norm_corr_h": rank_correlation(sizes, means.norm(dim=1)),
    }
    if classifier is None:
        return out
    w = classifier.detach().to(torch.float64)[stats.classes.to(classifier.device)]
    w_norms, h_norms = w.norm(dim=1), means.norm(dim=1).to(w.device)
    ratio_ok = bool((w_norms > 0).all() and (h_norms > 0).all())
    out.update(
        {
            "nc2_etf_w": etf_distance(w),
            "nc2_equinorm_w": equinorm(w),
            "nc2_equiangular_w": equiangularity(w),
            "nc2_orthogonal_w": gof_distance(w),
            "orthogonality_w": orthogonality(w),
            "nc3_duality": self_duality(w, centred),
            "nc3_duality_uncentred": self_duality(w, means),
            "nc3_etf_wh": product_etf_distance(w, centred),
            "nc3_orthogonal_wh": product_gof_distance(w, means),
            "alignment": alignment(w, means),
            "size_norm_corr_w": rank_correlation(sizes, w_norms),
            "norm_ratio_slope": log_slope(sizes, (w_norms / h_norms).pow(2)) if ratio_ok else 0.0,
        }
    )
    return out
