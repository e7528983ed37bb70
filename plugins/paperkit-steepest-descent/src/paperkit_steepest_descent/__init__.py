"""Steepest descent under a chosen norm (Kovalev, 2025; Bernstein & Newhouse, 2024) for paperkit. No torch here.

This module holds only the record and its config: ``paperkit plugins`` imports
it to list the method. The math is in :mod:`paperkit_steepest_descent.functional`,
the hook in :mod:`paperkit_steepest_descent.hooks`.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

__all__ = ["ANTHOLOGY", "PAPER", "SteepestDescentConfig", "method"]


@attrs.define
class SteepestDescentConfig:
    """Defaults: Kovalev's method with Muon's constants (Keller Jordan's Muon, torch.optim.Muon)."""

    norm: Literal["spectral", "l2", "linf", "per-role"] = option(
        "spectral",
        help="The norm of the trust region, d = argmax_{||d||<=1} <m, d> per tensor (Kovalev 2025): spectral: "
        "U V^T by Newton-Schulz (Muon); l2: m/||m||_F (normalized SGD); linf: sign(m) (signSGD with momentum, Adam "
        "without EMAs); per-role: a norm by the tensor's role, with modula's scalings (Bernstein & Newhouse 2024, "
        "modula/atom.py).",
        validator=v.in_(["spectral", "l2", "linf", "per-role"]),
    )
    lr: float = option(
        0.02, help="eta, the trust-region radius (step size). 0.02 is Muon's (Keller Jordan's Muon, NorMuon code) for "
        "norm='spectral'; sign steps want an Adam-sized rate (~1e-3), per-tensor l2 steps a larger one.",
        validator=v.gt(0.0),
    )
    momentum: float = option(
        0.95, help="beta = 1 - alpha of m <- (1 - alpha) m + alpha g (Kovalev writes alpha); 0.95 is Muon's "
        "(Keller Jordan's Muon, torch.optim.Muon).", validator=[v.ge(0.0), v.lt(1.0)],
    )
    nesterov: bool = option(
        False, help="Give the oracle g + beta (m - g) instead of m. Kovalev 2025: plain momentum (false); Muon's "
        "code and torch.optim.Muon default to true.",
    )
    weight_decay: float = option(
        0.0, help="lambda of the decoupled decay x <- (1 - eta*lambda) x (Kovalev 2025: iterates stay in "
        "||x|| <= 1/lambda); 0 as in Keller Jordan's Muon.", validator=v.ge(0.0),
    )
    order: Literal["momentum-first", "lmo-first"] = option(
        "momentum-first",
        help="momentum-first: the oracle of the momentum (Kovalev 2025, Muon). lmo-first: the momentum of the "
        "oracles (Orthogonal-SGDM, Tuddenham et al. 2022, for the spectral norm), the ablation the paper discusses.",
        validator=v.in_(["momentum-first", "lmo-first"]),
    )
    spectral_scale: Literal["muon", "modula", "none"] = option(
        "muon",
        help="Factor on U V^T for norm='spectral' (m x n, m = fan-out): muon: sqrt(max(1, m/n)) (Keller Jordan's Muon, "
        "torch.optim.Muon 'original'); modula: sqrt(m/n) (RMS->RMS operator norm, modula Linear.dualize); none: 1 "
        "(the plain spectral ball). norm='per-role' always uses modula's factor for linear maps.",
        validator=v.in_(["muon", "modula", "none"]),
    )
    l2_scope: Literal["global", "tensor"] = option(
        "global", help="norm='l2' only: global: one Euclidean ball over all parameters, d = m/||m|| with the norm of "
        "everything together (normalized SGD with momentum, Cutkosky & Mehta 2020, the case Kovalev names); tensor: "
        "each tensor normalized on its own (one ball per tensor, as the other norms are combined).",
        validator=v.in_(["global", "tensor"]),
    )
    embedding_role: Literal["embedding", "linear"] = option(
        "embedding", help="norm='per-role' only: embedding: nn.Embedding tables take the l1->RMS norm (each embedding "
        "vector normalized to RMS 1, modula Embed.dualize); linear: read them as linear maps from one-hot tokens "
        "(RMS->RMS spectral norm), the ablation of the anthology's example (abstract).",
        validator=v.in_(["embedding", "linear"]),
    )
    ns_steps: int = option(
        5, help="Newton-Schulz iterations, coefficients (3.4445, -4.7750, 2.0315) (Keller Jordan's Muon, "
        "torch.optim.Muon, the NorMuon plugin).", validator=[v.ge(1), v.lt(100)],
    )
    eps: float = option(
        1e-7, help="Floor of the norms the oracles divide by (torch.optim.Muon's Newton-Schulz EPS).", validator=v.gt(0.0),
    )


PAPER = Paper(
    title="Understanding Gradient Orthogonalization for Deep Learning via Non-Euclidean Trust-Region Optimization",
    year=2025,
    arxiv="2503.12645",
    authors="Dmitry Kovalev",
    venue="arXiv preprint",
)

ANTHOLOGY = Paper(
    title="Old Optimizer, New Norm: An Anthology",
    year=2024,
    arxiv="2409.20325",
    authors="Jeremy Bernstein, Laker Newhouse",
    venue="OPT 2024 workshop (NeurIPS)",
)

method = Method(
    key="steepest-descent",
    summary="Steepest descent with momentum under a chosen norm per tensor: spectral (Muon), l2 (normalized SGD), "
    "linf (signSGD), or a norm by the tensor's role (modula).",
    paper=PAPER,
    also=(ANTHOLOGY,),
    hooks=("optimize",),
    implementation="paperkit_steepest_descent.hooks:SteepestDescentMethod",
    config=SteepestDescentConfig,
    touches=("parameters", "optimizer"),
    exclusive=("optimizer",),
    license="Apache-2.0",
    claims=(
        Claim(
            id="spectral-beats-l2",
            statement="Steepest descent under the spectral norm (Muon: gradient orthogonalization) trains better than "
            "under the Euclidean norm (normalized SGD with momentum), same budget, each arm at its tuned learning "
            "rate (Kovalev 2025, abstract: both are the same trust-region method, only the norm differs). Checked: "
            "test accuracy of an MLP on MNIST-1D, every parameter under the arm's norm.",
            plan="paperkit_steepest_descent:claims/orthogonalization.toml",
            metric="classification/accuracy",
            variant="spectral",
            baseline="l2",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4, 5),
            quick=("run.max_steps=150",),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="muon-beats-orthogonal-sgdm",
            statement="Muon (momentum, then orthogonalize) is better in practice than Orthogonal-SGDM of Tuddenham et "
            "al. 2022 (orthogonalize each gradient, then momentum), which the trust-region analysis explains "
            "(Kovalev 2025, abstract). Checked: test accuracy of an MLP on MNIST-1D, same budget, tuned learning rates.",
            plan="paperkit_steepest_descent:claims/orthogonalization.toml",
            metric="classification/accuracy",
            variant="spectral",
            baseline="orthogonal-sgdm",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4, 5),
            quick=("run.max_steps=150",),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="per-role-embedding",
            statement="Linear and embedding layers share the weight space R^{m x n} but play different roles and "
            "should be assigned different norms (Bernstein & Newhouse 2024, abstract). Checked: per-role steepest "
            "descent with the token embedding under modula's embedding norm reaches a lower test loss than the same "
            "optimizer with the embedding read as a linear map (spectral norm), a small causal transformer on the "
            "next-token grammar.",
            plan="paperkit_steepest_descent:claims/per-role-embedding.toml",
            metric="language-model/loss",
            variant="per-role",
            baseline="embedding-as-linear",
            direction="lower",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4, 5),
            quick=("run.max_steps=100",),
            quick_seeds=(0, 1),
            paper=ANTHOLOGY,
        ),
    ),
)
