"""WSD and WSD-S learning-rate schedules (Wen et al., 2024) for paperkit: the record and its config. No torch import here.

The schedules are in :mod:`paperkit_wsd.functional`, the hooks in :mod:`paperkit_wsd.hooks`.
Place ``wsd`` as a second ``[[optimize]]`` entry next to the method that provides the optimizer.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

__all__ = ["WSDConfig", "method"]


def _budgets(instance: object, attribute: attrs.Attribute, value: list[float]) -> None:
    if not value:
        raise ValueError(f"'{attribute.name}' must list at least one budget")
    if any(not 0.0 < b <= 1.0 for b in value) or any(a >= b for a, b in zip(value, value[1:])):
        raise ValueError(f"'{attribute.name}' must be increasing fractions in (0, 1]: {list(value)}")


@attrs.define
class WSDConfig:
    schedule: Literal["wsd", "wsd-s", "constant"] = option(
        "wsd", help="wsd: one decay at the end; wsd-s: decay at every budget and resume from the decayed weights "
        "at the peak rate; constant: warmup then the peak rate, never decaying (the control).",
        validator=v.in_(["wsd", "wsd-s", "constant"]),
    )
    warmup_fraction: float = option(0.01, help="Linear warmup, as a fraction of the experience's steps (1%, Levanter's default).",
                                     validator=[v.ge(0.0), v.lt(1.0)])
    decay_fraction: float = option(0.1, help="Length of each decay as a fraction of its budget (WSD: 10% of the run; capped at the segment for WSD-S).",
                                   validator=[v.gt(0.0), v.le(1.0)])
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = option(
        "linear", help="Decay curve: linear (1-p), cosine ((1+cos pi p)/2) or 1-sqrt (1-sqrt p), as transformers.get_wsd_schedule.",
        validator=v.in_(["linear", "cosine", "1-sqrt"]),
    )
    min_lr_ratio: float = option(0.0, help="Learning rate at the end of a decay, as a fraction of the peak (decay to 0).",
                                 validator=[v.ge(0.0), v.le(1.0)])
    budgets: list[float] = option(attrs.Factory(lambda: [0.25, 0.5, 0.75, 1.0]),
                                  help="WSD-S (and the constant control): budgets as fractions of the experience's steps; "
                                  "a checkpoint is saved at the end of each decay. Ignored by wsd (one budget: the run).",
                                  validator=_budgets)
    probe_batches: int = option(8, help="Batches of a fixed training subset on which the decay's loss drop is measured.",
                                validator=v.ge(1))
    save_checkpoints: bool = option(True, help="Save budget-<step>.safetensors at the end of every budget.")


_PAPER = Paper(
    "Understanding Warmup-Stable-Decay Learning Rates: A River Valley Loss Landscape Perspective", 2024, "2410.05192",
    "Kaiyue Wen, Zhiyuan Li, Jason Wang, David Hall, Percy Liang, Tengyu Ma",
)

method = Method(
    key="wsd",
    summary="Warmup-stable-decay learning rate and WSD-S (one run, decayed checkpoints at several budgets); composes with any optimizer.",
    paper=_PAPER,
    hooks=("optimize", "after_step", "after_run"),
    implementation="paperkit_wsd.hooks:WSD",
    config=WSDConfig,
    touches=("schedule", "metrics"),
    claims=(
        Claim(
            id="decay-drop",
            statement="The loss stays elevated during the stable phase and drops sharply during the decay phase.",
            plan="paperkit_wsd:claims/decay-drop.toml",
            metric="wsd/decay_drop", variant="wsd", baseline="constant", direction="higher", margin=0.0,
            seeds=(0, 1, 2, 3, 4), quick=(), quick_seeds=(0, 1),
        ),
        Claim(
            id="wsd-s-budgets",
            statement="WSD-S obtains better checkpoints for several compute budgets in a single run than Cyclic-Cosine "
            "(decaying at each budget and resuming from the decayed checkpoint, against a cosine cycle per budget).",
            plan="paperkit_wsd:claims/wsd-s-budgets.toml",
            metric="wsd/budget_test_loss_mean", variant="wsd-s", baseline="cyclic-cosine", direction="lower", margin=0.0,
            seeds=(0, 1, 2, 3, 4), quick=(), quick_seeds=(0, 1),
        ),
        *(
            Claim(
                id=f"wsd-s-vs-wsd-{b}",
                statement=f"WSD-S, which reuses the earlier decays, outperforms WSD, which branches a decay off a "
                f"never-decayed main branch, at the same budget ({b} of 300 steps).",
                plan="paperkit_wsd:claims/wsd-s-budgets.toml",
                metric=f"wsd/budget-{b}/test_loss", variant="wsd-s", baseline=baseline, direction="lower", margin=0.0,
                seeds=(0, 1, 2, 3, 4), quick=(), quick_seeds=(0, 1),
            )
            for b, baseline in ((150, "wsd-150"), (225, "wsd-225"), (300, "wsd"))
        ),
    ),
)
