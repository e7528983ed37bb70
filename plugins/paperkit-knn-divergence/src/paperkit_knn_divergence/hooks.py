"""Hook shell over :mod:`paperkit_knn_divergence.functional`.

``KnnDivergence.evaluate`` takes the representations of the sets it compares from ``EvalSet.features()`` /
``predictions()`` (gathered from every process, so every process computes the same numbers), splits them with a
fixed seeded permutation where the config says so, and reports ``kl`` and ``renyi`` (nats): the test split compares
the test set with its ``reference``, every ``ood:<set>`` split that set with the clean test set.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paperkit import PluginError, hookimpl
from paperkit_knn_divergence import functional


def representation(data: Any, space: str) -> torch.Tensor:
    """The set's features, softmax probabilities or logits, one row per sample (float64)."""
    if space == "features":
        try:
            h = data.features()
        except ValueError as error:
            raise PluginError(f"knn-divergence: {error}") from error
        return h.flatten(1).double()
    logits = data.predictions()[0].flatten(1).double()
    return logits.softmax(dim=1) if space == "probabilities" else logits


class KnnDivergence:
    """KL and Rényi divergences between two sets of representations, by nearest-neighbour ratios."""

    def __init__(self, config: Any) -> None:
        from paperkit_knn_divergence import KnnDivergenceConfig

        self.config = config if config is not None else KnnDivergenceConfig()

    def _halves(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.config.split_seed))
        return perm[: n // 2], perm[n // 2 :]

    def _divergences(self, p: torch.Tensor, q: torch.Tensor) -> dict[str, float]:
        """D(P‖Q): X = P (f_1), Y = Q (f_2), the paper's roles."""
        if len(p) < 2 or len(q) < 2:
            return {}
        k = self.config.k or functional.default_k(len(q))
        k = min(k, len(p) + len(q) - 1)
        return {
            "kl": functional.kl_divergence(p, q, k),
            "renyi": functional.renyi_divergence(p, q, k, self.config.alpha),
        }

    @hookimpl
    def evaluate(self, model: nn.Module, data: Any, ctx: Any) -> dict[str, float]:
        experience, space, reference = data.experience, self.config.space, self.config.reference
        if data.split == "test":
            test = representation(data, space)
            if reference == "train":
                train = representation(ctx.eval_set(model, experience.train, "train"), space)
                return self._divergences(test, train)
            a, b = self._halves(len(test))
            if reference == "halves":
                return self._divergences(test[a], test[b])
            name = reference[len("ood:") :]
            if name not in experience.ood:
                known = ", ".join(sorted(experience.ood)) or "none"
                raise PluginError(f"knn-divergence: reference {reference!r} names no ood set (this task has: {known})")
            shifted = representation(ctx.eval_set(model, experience.ood[name], reference), space)
            if len(shifted) != len(test):
                raise PluginError("knn-divergence: an ood reference must hold as many samples as the test set")
            return self._divergences(test[a], shifted[b])
        if data.split.startswith("ood:"):
            shifted = representation(data, space)
            clean = representation(ctx.eval_set(model, experience.test, "test"), space)
            if len(shifted) == len(clean):
                a, b = self._halves(len(clean))
                return self._divergences(shifted[a], clean[b])
            return self._divergences(shifted, clean)
        return {}
