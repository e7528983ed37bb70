"""paperkit plugin: IDInit, fully identical initialization (Pan et al., ICLR 2025).

This module holds only the record and its config (no torch): ``paperkit
plugins`` imports it to list the method. The math lives in
:mod:`paperkit_idinit.functional`; :mod:`paperkit_idinit.hooks` wires it to the engine.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

#: Mirrors ``paperkit_idinit.functional.DEFAULT_RESIDUAL_ENDS`` (kept here so this module needs no torch).
_DEFAULT_ENDS = ("blocks.*.linear2", "encoder.layers.*.self_attn.out_proj", "encoder.layers.*.linear2")


def _finite_positive(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not (value == value and abs(value) != float("inf")) or value <= 0:
        raise ValueError(f"'{attribute.name}' must be a finite number > 0, got {value}")


@attrs.define
class IDInitConfig:
    """Options of ``idinit``; each help text says where its default comes from."""

    tau: float = option(
        1.0,
        help="τ, the value on the identity-like entries of IDI_τ (Eq. 3). 1 keeps the identity; the caption of "
        "Fig. 3 says τ is 'usually set to 1' (the paper discusses other values per activation).",
        validator=_finite_positive,
    )
    eps: float = option(
        1e-6,
        help="ε of IDIZ_ε, the zero-preserving init of each residual branch's last layer (Sec. 3.3.2; Fig. 3: "
        "'usually set to 1e-6'). 0 makes those layers exactly zero (the Fixup / ZerO choice, the paper's ablation).",
        validator=[v.ge(0.0), v.lt(1.0)],
    )
    conv: Literal["patch", "channel"] = option(
        "patch",
        help="How a convolution kernel gets IDI_τ: 'patch' = IDIC_τ, patch-maintain (Sec. 3.3.1: the kernel read as "
        "c_out x (c_in·k·k), IDI_τ, reshaped back), the paper's choice; 'channel' = IDI_τ(c_out x c_in) at the kernel "
        "centre (channel-maintain, the paper's ablation baseline).",
        validator=v.in_(["patch", "channel"]),
    )
    loose: float = option(
        0.0,
        help="σ of the 'loose' condition (Sec. 3.2): each τ entry of IDI_τ drawn from N(τ, σ²) to break the replicas "
        "of a tall matrix, from the run's checkpointed generator. 0 (off) by default: the paper offers it as an "
        "option and we could not confirm its experiments use it.",
        validator=v.ge(0.0),
    )
    residual_ends: list[str] = option(
        attrs.Factory(lambda: list(_DEFAULT_ENDS)),
        help="Glob patterns of the layers that end a residual branch; they get IDIZ_ε, every other layer IDI_τ "
        "(Sec. 3: identity in the main stem and the sub-stem). The default names the embedded mlp's Block.linear2 "
        "and the transformer's attention output projection and second feed-forward layer; patterns you write must "
        "name a Linear or convolution of the model.",
        validator=v.deep_iterable(v.instance_of(str), v.instance_of(list)),
    )


PAPER = Paper(
    title="IDInit: A Universal and Stable Initialization Method for Neural Network Training",
    year=2025,
    arxiv="2503.04626",
    authors="Yu Pan, Chaozheng Wang, Zekai Wu, Qifan Wang, Min Zhang, Zenglin Xu",
    venue="ICLR",
)

method = Method(
    key="idinit",
    summary="Identity-like init everywhere: padded identity IDI_τ for every weight (tall ones repeat the identity), "
    "patch-maintain IDIC_τ for convolutions, and a tiny zero-preserving IDIZ_ε (ε = 1e-6) at each residual branch's end.",
    paper=PAPER,
    hooks=("init",),
    implementation="paperkit_idinit.hooks:IDInit",
    config=IDInitConfig,
    touches=("parameters",),
    claims=(
        Claim(
            id="residual-mlp-vs-default",
            statement="A deep residual network without normalization reaches a higher test accuracy from IDInit than "
            "from the default random initialization under the same budget (abstract: 'improved convergence, stability, "
            "and performance'; Table 2 'Kaiming', Table 3 'Default'). Here: 8 residual blocks of width 128 on digits, "
            "SGD with momentum, 6 epochs, each arm at its tuned learning rate.",
            plan="paperkit_idinit:claims/residual-mlp.toml",
            metric="classification/accuracy",
            variant="idinit",
            baseline="default-init",
            direction="higher",
            margin=0.0,
            seeds=tuple(range(10)),
            quick=("run.epochs=2",),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="residual-mlp-vs-zero",
            statement="On the same residual network, IDInit reaches a higher test accuracy than ZerO (Table 2), "
            "whose widening stem is a Hadamard block and whose residual ends are exactly zero.",
            plan="paperkit_idinit:claims/residual-mlp.toml",
            metric="classification/accuracy",
            variant="idinit",
            baseline="zero-init",
            direction="higher",
            margin=0.0,
            seeds=tuple(range(10)),
            quick=("run.epochs=2",),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="residual-mlp-eps",
            statement="Ablation of IDIZ_ε (Sec. 3.3.2, Table 4): with ε = 1e-6 at each residual branch's end instead "
            "of an exact zero, the same network reaches a higher test accuracy (same learning rate).",
            plan="paperkit_idinit:claims/residual-mlp.toml",
            metric="classification/accuracy",
            variant="idinit",
            baseline="idinit-eps0",
            direction="higher",
            margin=0.0,
            seeds=tuple(range(10)),
            quick=("run.epochs=2",),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="cnn-patch-maintain",
            statement="Ablation of IDIC_τ (Sec. 3.3.1, Table 4): convolutions initialized patch-maintain reach a "
            "higher test accuracy than with the channel-maintain identity at the kernel centre. Here: the embedded "
            "two-convolution cnn with batch norm on digits, 6 epochs, each arm at its tuned learning rate.",
            plan="paperkit_idinit:claims/cnn.toml",
            metric="classification/accuracy",
            variant="idinit",
            baseline="idinit-channel",
            direction="higher",
            margin=0.0,
            seeds=tuple(range(10)),
            quick=("run.epochs=2",),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="cnn-vs-default",
            statement="On the same cnn, IDInit (patch-maintain) reaches a higher test accuracy than the default "
            "random initialization (Table 3 'Default'), each arm at its tuned learning rate.",
            plan="paperkit_idinit:claims/cnn.toml",
            metric="classification/accuracy",
            variant="idinit",
            baseline="default-init",
            direction="higher",
            margin=0.0,
            seeds=tuple(range(10)),
            quick=("run.epochs=2",),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="cnn-vs-zero",
            statement="On the same cnn, IDInit (patch-maintain) reaches a higher test accuracy than ZerO (Table 2), "
            "whose widening convolutions hold a Hadamard block at the kernel centre.",
            plan="paperkit_idinit:claims/cnn.toml",
            metric="classification/accuracy",
            variant="idinit",
            baseline="zero-init",
            direction="higher",
            margin=0.0,
            seeds=tuple(range(10)),
            quick=("run.epochs=2",),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["IDInitConfig", "PAPER", "method"]
