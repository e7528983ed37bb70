"""G-ACIL's analytic classifier as plain functions and one module, usable without the engine.

After the backbone is frozen, every sample x is mapped to a wider random
feature (the "buffer layer" of ACIL / G-ACIL; reference: analytic/Buffer.py,
RandomBuffer):

    X = ReLU(f(x) W_B^T),   W_B fixed, drawn like nn.Linear's default init

and the classifier is ridge regression to one-hot labels over everything seen:

    W = (X_{1:k}^T X_{1:k} + gamma I)^{-1} X_{1:k}^T Y_{1:k}

It is learned recursively, one batch (X, Y) at a time, through the regularized
autocorrelation inverse R = (X^T X + gamma I)^{-1} and the Woodbury identity
(ACIL Eqs. 9-10; G-ACIL's mini-batch form, reference: analytic/AnalyticLinear.py,
RecursiveLinear.fit):

    K = (I + X R X^T)^{-1}
    R <- R - R X^T K X R
    W <- W + R X^T (Y - X W)          (with the updated R)

so after any sequence of batches W equals the joint least-squares solution on
all of them: the order of the data, and whether a class shows up in one
experience or in several (generalized class-incremental learning), does not
matter. Nothing but R and W is kept: no exemplars.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Logit given to classes the classifier has not seen yet. The reference grows its
#: output layer as classes arrive, so an unseen class is never predicted; a large
#: finite negative logit does the same on a fixed-width head (as the engine's
#: task masking does).
UNSEEN_LOGIT = -1e9


def expansion_weight(in_features: int, out_features: int, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The fixed random buffer layer W_B, [out_features, in_features].

    Uniform on [-1/sqrt(in), 1/sqrt(in)]: the distribution of nn.Linear's
    default initialization, which the reference's RandomBuffer uses.
    """
    bound = 1.0 / math.sqrt(in_features)
    w = torch.rand(out_features, in_features, generator=generator, dtype=torch.float64)
    return ((w * 2 - 1) * bound).to(dtype)


def expand(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """X = ReLU(features W_B^T), computed in W_B's dtype (float64 by default)."""
    return torch.relu(features.to(weight) @ weight.t())


def one_hot(y: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return F.one_hot(y.long(), num_classes).to(dtype)


def rls_init(dim: int, num_classes: int, gamma: float, dtype: torch.dtype = torch.float64,
             device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """R_0 = I / gamma and W_0 = 0: the ridge solution before any data."""
    R = torch.eye(dim, dtype=dtype, device=device) / gamma
    W = torch.zeros(dim, num_classes, dtype=dtype, device=device)
    return R, W


def rls_update(R: torch.Tensor, W: torch.Tensor, X: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One recursive least-squares step with the batch (X, Y); returns the new (R, W).

    Woodbury: only a [batch, batch] system is solved, never a [dim, dim] inverse.
    """
    X, Y = X.to(R), Y.to(R)
    RXt = R @ X.t()
    K = torch.eye(X.shape[0], dtype=R.dtype, device=R.device) + X @ RXt
    R = R - RXt @ torch.linalg.solve(K, RXt.t())
    R = (R + R.t()) / 2  # R is symmetric; keep rounding from breaking that
    W = W + R @ X.t() @ (Y - X @ W)
    return R, W


def ridge_solution(X: torch.Tensor, Y: torch.Tensor, gamma: float) -> torch.Tensor:
    """The joint solution (X^T X + gamma I)^{-1} X^T Y that the recursion must reproduce."""
    X, Y = X.to(torch.float64), Y.to(torch.float64)
    A = X.t() @ X + gamma * torch.eye(X.shape[1], dtype=X.dtype, device=X.device)
    return torch.linalg.solve(A, X.t() @ Y)


class AnalyticHead(nn.Module):
    """A classifier's head that starts as its linear head and becomes the analytic classifier.

    Until :meth:`load` is called it computes ``linear(features)`` (the head the
    backbone is trained with by backpropagation on the first experience); after
    it, ``ReLU(features W_B^T) W`` with unseen classes at :data:`UNSEEN_LOGIT`,
    in the features' dtype. Installing it once, before training, keeps the
    model's state-dict keys the same for the whole run, so checkpoints and
    saved weights load back into a freshly adapted model.
    """

    def __init__(self, linear: nn.Linear, expansion: torch.Tensor) -> None:
        super().__init__()
        self.linear = linear
        self.register_buffer("expansion", expansion)
        self.register_buffer("analytic_weight", torch.zeros(expansion.shape[0], linear.out_features, dtype=expansion.dtype))
        self.register_buffer("seen", torch.zeros(linear.out_features, dtype=torch.bool))
        self.register_buffer("active", torch.tensor(False))

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def expand(self, features: torch.Tensor) -> torch.Tensor:
        return expand(features, self.expansion)

    @torch.no_grad()
    def load(self, weight: torch.Tensor, seen: torch.Tensor) -> None:
        """Switch to the analytic classifier with weights W and the seen-class mask."""
        self.analytic_weight.copy_(weight)
        self.seen.copy_(seen)
        self.active.fill_(True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not bool(self.active):
            return self.linear(features)
        logits = self.expand(features) @ self.analytic_weight
        return logits.masked_fill(~self.seen, UNSEEN_LOGIT).to(features.dtype)


class RecursiveClassifier:
    """R, W and the seen classes of an analytic classifier over expanded features, updated batch by batch."""

    def __init__(self, dim: int, num_classes: int, gamma: float, device: torch.device | str | None = None) -> None:
        self.gamma = gamma
        self.R, self.W = rls_init(dim, num_classes, gamma, torch.float64, device)
        self.seen = torch.zeros(num_classes, dtype=torch.bool, device=device)

    def fit(self, X: torch.Tensor, y: torch.Tensor) -> None:
        """Add a batch of expanded features X and labels y."""
        self.R, self.W = rls_update(self.R, self.W, X, one_hot(y.to(self.R.device), self.W.shape[1], self.R.dtype))
        self.seen[y.unique().to(self.seen.device)] = True

    def state_dict(self) -> dict[str, torch.Tensor | float]:
        return {"R": self.R, "W": self.W, "seen": self.seen, "gamma": self.gamma}

    def load_state_dict(self, state: dict) -> None:
        self.R, self.W, self.seen, self.gamma = state["R"], state["W"], state["seen"], state["gamma"]

    def to(self, device: torch.device | str) -> RecursiveClassifier:
        """Move R, W and the seen classes to ``device`` (a checkpoint restores them on the CPU)."""
        self.R, self.W, self.seen = self.R.to(device), self.W.to(device), self.seen.to(device)
        return self
