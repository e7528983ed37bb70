"""Continual-learning metrics computed from the accuracy matrix.

``R[i][j]`` is the accuracy on experience ``j``'s test set after training on
experience ``i``; ``b[j]`` is the accuracy of the model before any training.
Definitions follow Lopez-Paz & Ranzato (2017, GEM) for ACC, BWT and FWT, and
Chaudhry et al. (2018, RWalk) for forgetting. The matrix holds the task's headline
metric (accuracy for class tasks, R² or mAP for others); a lower-is-better metric is
handled by :func:`stream_metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence


def average_accuracy(R: Sequence[Sequence[float]]) -> float:
    """ACC = (1/T) Σ_j R[T-1][j]."""
    last = R[-1]
    return sum(last) / len(last)


def backward_transfer(R: Sequence[Sequence[float]]) -> float | None:
    """BWT = 1/(T-1) Σ_{j<T-1} (R[T-1][j] − R[j][j]); negative means forgetting."""
    T = len(R)
    if T < 2:
        return None
    return sum(R[T - 1][j] - R[j][j] for j in range(T - 1)) / (T - 1)


def forward_transfer(R: Sequence[Sequence[float]], initial: Sequence[float]) -> float | None:
    """FWT = 1/(T-1) Σ_{j≥1} (R[j-1][j] − b[j])."""
    T = len(R)
    if T < 2:
        return None
    return sum(R[j - 1][j] - initial[j] for j in range(1, T)) / (T - 1)


def forgetting(R: Sequence[Sequence[float]]) -> float | None:
    """F = 1/(T-1) Σ_{j<T-1} max_{l∈[j, T-2]} (R[l][j] − R[T-1][j])."""
    T = len(R)
    if T < 2:
        return None
    total = 0.0
    for j in range(T - 1):
        best = max(R[i][j] for i in range(j, T - 1))
        total += best - R[T - 1][j]
    return total / (T - 1)


def stream_metrics(
    R: Sequence[Sequence[float]], initial: Sequence[float], direction: str = "higher"
) -> dict[str, float | None]:
    """ACC, forgetting, BWT and FWT of the matrix ``R`` of a metric where ``direction`` ("higher" or "lower") is better.

    ACC is in the metric's units. Forgetting, BWT and FWT are oriented so that their
    sign means the same for every metric (forgetting > 0: the metric got worse than
    its best; BWT and FWT > 0: an improvement): for a lower-is-better metric they are
    computed on ``-R``, in the metric's units.
    """
    sign = 1.0 if direction == "higher" else -1.0
    signed = [[sign * v for v in row] for row in R]
    signed_initial = [sign * v for v in initial]
    return {
        "average_accuracy": average_accuracy(R),
        "forgetting": forgetting(signed),
        "backward_transfer": backward_transfer(signed),
        "forward_transfer": forward_transfer(signed, signed_initial),
    }
