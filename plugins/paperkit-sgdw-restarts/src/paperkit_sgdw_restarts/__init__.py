"""SGDW and warm restarts (Loshchilov & Hutter, ICLR 2019; SGDR, ICLR 2017) for paperkit: records and configs.

Two records from one distribution:

- ``sgdw-restarts``: the paper's SGDW (momentum SGD with decoupled, optionally normalized
  weight decay) with its cosine annealing with warm restarts (SGDWR); provides the optimizer;
- ``warm-restarts``: the schedule alone, for any optimizer (with the built-in ``adamw`` it is
  the paper's AdamWR).

No torch import here: ``paperkit plugins`` imports this module to list the methods. The math
is in :mod:`paperkit_sgdw_restarts.functional`, the hooks in :mod:`paperkit_sgdw_restarts.hooks`.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

__all__ = ["PAPER", "SGDR", "SGDWRestartsConfig", "WarmRestartsConfig", "method", "warm_restarts_method"]

_REF = "loshchil/AdamW-and-SGDW"


@attrs.define
class WarmRestartsConfig:
    """Cosine annealing with warm restarts (SGDR Sec. 3, Eq. 5); defaults from the authors' code and README."""

    schedule: Literal["restarts", "cosine", "constant"] = option(
        "restarts",
        help="restarts: cosine annealing restarted every cycle (SGDR; the paper's SGDWR/AdamWR); cosine: one annealing "
        f"over the whole experience (the paper's runs 'without restarts', {_REF} README -Te = -nEpochs); constant: no "
        "schedule (train.lua -LRdec false).",
        validator=v.in_(["restarts", "cosine", "constant"]),
    )
    t_0: float = option(
        0.0,
        help="Length of the first cycle in epochs (SGDR's T_0; opts.lua -Te). 0: chosen so that `cycles` cycles fill the "
        "experience exactly (the paper's budgets end on a restart).",
        validator=v.ge(0.0),
    )
    t_mult: int = option(2, help=f"Each cycle is t_mult times longer than the previous one (SGDR's T_mult; {_REF} "
                         "opts.lua -Tmult 2 and README).", validator=v.ge(1))
    cycles: int = option(4, help=f"Cycles in the experience when t_0 = 0 ({_REF} README: -Te 100 -Tmult 2 over 1500 "
                         "epochs, i.e. 100 + 200 + 400 + 800).", validator=v.ge(1))
    min_lr_ratio: float = option(0.0, help="eta_min / eta_max at the end of each cycle (train.lua anneals to 0).",
                                 validator=[v.ge(0.0), v.le(1.0)])
    anytime_eval: bool = option(
        False,
        help="Evaluate on the test set at the end of every cycle of the restart schedule (the same steps whatever "
        "`schedule` is, so a 'cosine' or 'constant' baseline is measured at the same points) and report the mean: "
        "the paper's anytime performance of warm restarts.",
    )


@attrs.define
class SGDWRestartsConfig(WarmRestartsConfig):
    """SGDW (paper Algorithm 1) with its schedule; defaults from the authors' SGDW example (README) and train.lua."""

    lr: float = option(0.05, help=f"Initial learning rate alpha ({_REF} README, the SGDW example: -LR 0.05).",
                       validator=v.gt(0.0))
    momentum: float = option(0.9, help=f"Momentum factor beta_1 ({_REF} opts.lua and README: -momentum 0.9).",
                             validator=[v.ge(0.0), v.lt(1.0)])
    dampening: float = option(0.0, help="Dampening tau of b <- mu*b + (1-tau)*g (train.lua: dampening = 0.0).",
                              validator=[v.ge(0.0), v.le(1.0)])
    nesterov: bool = option(False, help="Nesterov momentum (train.lua: nesterov = false).")
    weight_decay: float = option(
        0.025,
        help=f"Decoupled weight decay lambda; with normalize_weight_decay it is lambda_norm ({_REF} README: normalized "
        "-weightDecay 0.025 for SGDW and AdamW).",
        validator=v.ge(0.0),
    )
    normalize_weight_decay: bool = option(
        True,
        help="lambda = weight_decay * sqrt(b/(B*T)) = weight_decay / sqrt(steps in the cycle or run): the paper's "
        "normalized weight decay (train.lua algorithmType SGDW). False: weight_decay is the per-step lambda "
        "(train.lua SGDdec).",
    )
    decay_scaling: Literal["schedule", "lr"] = option(
        "schedule",
        help="schedule: decay eta_t*lambda*theta, eta_t the schedule multiplier only (Algorithm 1 line 9; train.lua "
        "weightDecaycurrent = multiplier*lambda), independent of lr; lr: lr*lambda*theta (pytorch-optimizer SGDW, "
        "torch AdamW), which couples lambda to lr again.",
        validator=v.in_(["schedule", "lr"]),
    )


PAPER = Paper(
    title="Decoupled Weight Decay Regularization",
    year=2019,
    arxiv="1711.05101",
    authors="Ilya Loshchilov, Frank Hutter",
    venue="ICLR 2019",
)

SGDR = Paper(
    title="SGDR: Stochastic Gradient Descent with Warm Restarts",
    year=2017,
    arxiv="1608.03983",
    authors="Ilya Loshchilov, Frank Hutter",
    venue="ICLR 2017",
)

method = Method(
    key="sgdw-restarts",
    summary="SGDW: momentum SGD whose weight decay is applied to the weights, scaled by the schedule multiplier only "
            "(decoupled from the learning rate), normalized by the run length, with cosine annealing and warm restarts.",
    paper=PAPER,
    also=(SGDR,),
    hooks=("optimize", "after_step", "after_run"),
    implementation="paperkit_sgdw_restarts.hooks:SGDWRestarts",
    config=SGDWRestartsConfig,
    touches=("parameters", "optimizer", "schedule", "metrics"),
    exclusive=("optimizer",),
    claims=(
        Claim(
            id="decoupled-lr",
            statement="Decoupled weight decay makes the best weight decay (nearly) independent of the learning rate "
            "(abstract; Sec. 2, Prop. 1; Fig. 2): with each optimizer's decay tuned at lr 0.05 and the learning rate "
            "then multiplied by 4, SGDW keeps a higher test accuracy than SGD with L2 regularization.",
            plan="paperkit_sgdw_restarts:claims/decoupled-lr.toml",
            metric="classification/accuracy", variant="sgdw", baseline="sgd-l2", direction="higher", margin=0.0,
            seeds=tuple(range(10)), quick=("run.max_steps=100",), quick_seeds=(0, 1),
        ),
        Claim(
            id="anytime",
            statement="Warm restarts improve anytime performance (the paper's v1 abstract: AdamWR 'has strong anytime "
            "performance'): SGDW with cosine annealing and warm restarts (4 cycles, T_mult = 2) has a higher mean "
            "test accuracy at the ends of its cycles than SGDW with one cosine annealing, measured at the same steps.",
            plan="paperkit_sgdw_restarts:claims/anytime.toml",
            metric="sgdw-restarts/anytime_accuracy", variant="sgdwr", baseline="sgdw-cosine", direction="higher",
            margin=0.0, seeds=tuple(range(10)), quick=("run.max_steps=100",), quick_seeds=(0, 1),
        ),
    ),
)

warm_restarts_method = Method(
    key="warm-restarts",
    summary="Cosine annealing of the learning rate with warm restarts (SGDR) for any optimizer; with adamw: AdamWR.",
    paper=SGDR,
    also=(PAPER,),
    hooks=("optimize", "after_step", "after_run"),
    implementation="paperkit_sgdw_restarts.hooks:WarmRestarts",
    config=WarmRestartsConfig,
    touches=("schedule", "metrics"),
    claims=(),
)
