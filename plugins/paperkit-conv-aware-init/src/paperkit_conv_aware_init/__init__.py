"""paperkit plugin: Convolution Aware Initialization (Aghajanyan, 2017).

This module holds only the record and its config (no torch): ``paperkit
plugins`` imports it to list the method. The math lives in
:mod:`paperkit_conv_aware_init.functional`; :mod:`paperkit_conv_aware_init.hooks`
wires it to the engine.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


@attrs.define
class ConvAwareInitConfig:
    """Options of ``conv-aware-init``; each help text says where its default comes from."""

    scheme: Literal["conv-aware", "he"] = option(
        "conv-aware",
        help="How conv (Conv1d/2d/3d) weights are drawn. 'conv-aware': the method — per output filter, an orthogonal "
        "basis in the kernel's rFFT domain (SVD of a symmetrized Gaussian), inverse-FFT'd to spatial filters, plus "
        "N(0, eps_std²) noise, the tensor rescaled to variance 2/fan_in (keras-contrib ConvolutionAware, the author's "
        "reference). 'he': He-normal N(0, 2/fan_in) (torch's kaiming_normal_, fan_in, ReLU), the paper's baseline, "
        "through the same code path and generator.",
        validator=v.in_(["conv-aware", "he"]),
    )
    linear: Literal["orthogonal", "he", "keep"] = option(
        "orthogonal",
        help="How Linear weights are drawn. 'orthogonal': the reference's fallback for any non-conv shape, Keras 2's "
        "Orthogonal() with gain 1 (SVD of a Gaussian shaped like the Keras kernel (in, out)); 'he': He-normal "
        "N(0, 2/fan_in); 'keep': left as the model built them.",
        validator=v.in_(["orthogonal", "he", "keep"]),
    )
    eps_std: float = option(
        0.05,
        help="Standard deviation of the Gaussian noise added to every spatial filter before the rescaling, 'to break "
        "symmetry in the inverse fourier transform' (ConvolutionAware(eps_std=0.05), the reference's default); also "
        "the scale of the random values 1×1 kernels get instead of a basis. 0 gives the noise-free filters (1×1 "
        "kernels then cannot be rescaled and are an error).",
        validator=[v.instance_of(float), v.ge(0.0)],
    )
    zero_bias: bool = option(
        True,
        help="Set the biases of the initialized layers to 0: Keras' default bias_initializer='zeros', the framework of "
        "the reference and the paper. false keeps the biases the model was built with.",
    )


PAPER = Paper(
    title="Convolution Aware Initialization",
    year=2017,
    arxiv="1702.06295",
    authors="Armen Aghajanyan",
    venue="arXiv preprint",
)

method = Method(
    key="conv-aware-init",
    summary="Draw each conv filter bank as an orthogonal basis in the kernel's Fourier (rFFT) domain, "
    "inverse-FFT'd to space, plus small noise, rescaled to He variance 2/fan_in; Linear layers get the reference's "
    "orthogonal fallback.",
    paper=PAPER,
    hooks=("init",),
    implementation="paperkit_conv_aware_init.hooks:ConvAwareInit",
    config=ConvAwareInitConfig,
    touches=("parameters",),
    exclusive=(),
    claims=(
        Claim(
            id="faster-convergence",
            statement="Abstract: 'With Convolution Aware Initialization we noticed not only higher accuracy and lower "
            "loss, but faster convergence', against He initialization (here: lower test cross-entropy of the embedded "
            "CNN after a short fixed budget, conv-aware with the reference's orthogonal Linear fallback vs He-normal on "
            "every layer, each arm at its own tuned learning rate).",
            plan="paperkit_conv_aware_init:claims/faster-convergence.toml",
            metric="classification/loss",
            variant="conv-aware",
            baseline="he",
            direction="lower",
            margin=0.0,
            seeds=tuple(range(20)),
            quick=("run.max_steps=10",),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="conv-part",
            statement="The paper's contribution alone: the Fourier-orthogonal conv filters converge faster than "
            "He-normal conv filters when every other layer is drawn the same way (both arms: the reference's "
            "orthogonal Linear fallback; lower test cross-entropy after the same short budget, tuned learning rates).",
            plan="paperkit_conv_aware_init:claims/conv-part.toml",
            metric="classification/loss",
            variant="conv-aware",
            baseline="he-conv",
            direction="lower",
            margin=0.0,
            seeds=tuple(range(20)),
            quick=("run.max_steps=10",),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["ConvAwareInitConfig", "PAPER", "method"]
