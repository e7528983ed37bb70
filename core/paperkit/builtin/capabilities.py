"""Records of the built-in methods that exercise the engine's optional step paths (no torch here).

Each proves one capability of the plugin API against a reference: SAM (the
closure step, an optimizer wrapper), PCGrad (per-term gradients), layer-wise
learning-rate decay (parameter rules), knowledge distillation (a teacher from
another variant), the mean teacher (an EMA copy), co-teaching (a second trainable network), Net2WiderNet (growth) and
a curvature diagnostic (second-order and per-sample derivatives), double
backpropagation (a second backward inside ``regularize``, also under several
processes) and an L2 penalty (a second named term for per-term methods).
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit.spec import Method, Paper, option


def _steps(instance: object, attribute: attrs.Attribute, value: list) -> None:
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in value):
        raise ValueError(f"'{attribute.name}' must list optimizer steps (integers >= 1)")


@attrs.define
class SAMConfig:
    rho: float = option(
        0.05,
        help="Neighbourhood radius ρ; 0.05 is Foret et al.'s value for most CIFAR runs (Sec. 3.1, App. C.1).",
        validator=v.ge(0.0),
    )
    adaptive: bool = option(
        False, help="ASAM's scale-invariant neighbourhood T = |w| (Kwon et al., ICML 2021; they use ρ = 0.5 with it)."
    )
    eps: float = option(
        1e-12, help="Added to the gradient norm (pytorch-optimizer's perturb_eps).", validator=v.ge(0.0)
    )


@attrs.define
class PCGradConfig:
    reduction: str = option(
        "sum",
        help="How the projected gradients combine: 'sum' (Yu et al., Algorithm 1) or 'mean' (Pytorch-PCGrad's default).",
        validator=v.in_(("sum", "mean")),
    )


@attrs.define
class L2Config:
    weight: float = option(
        1e-4,
        help="λ of the penalty (λ/2)·‖θ‖², equal to SGD weight decay λ; 1e-4 is He et al.'s (2016) ResNet setting.",
        validator=v.ge(0.0),
    )


@attrs.define
class DoubleBackpropConfig:
    weight: float = option(
        0.01,
        help="Weight of the input-gradient penalty; Drucker & LeCun tune it per problem, 0.01 suits the digits.",
        validator=v.ge(0.0),
    )


@attrs.define
class LayerLRDecayConfig:
    decay: float = option(
        0.8,
        help="Layer l of L trains at lr·decay^(L−1−l); 0.8 is ELECTRA-Base's layer-wise decay (Clark et al., 2020, App. A).",
        validator=[v.gt(0.0), v.le(1.0)],
    )
    no_decay: list[str] = option(
        attrs.Factory(lambda: ["*.bias", "*norm*"]),
        help="Parameter-name globs trained without weight decay (biases and norms, as BERT's and ELECTRA's code do).",
    )


@attrs.define
class DistillConfig:
    teacher: str = option(
        "variant:teacher",
        help="The teacher's weights: a file, or variant:NAME (that variant of this plan, run first, with its own model).",
    )
    temperature: float = option(
        4.0,
        help="T of the softened softmaxes; Hinton et al. (2015, Sec. 3) found 2.5–4 best for small MNIST students.",
        validator=v.gt(0.0),
    )
    alpha: float = option(
        0.9,
        help="Weight of the soft term (1 − alpha on the labels); the paper weights the hard term considerably lower (Sec. 2.1).",
        validator=[v.ge(0.0), v.le(1.0)],
    )
    cache: bool = option(
        True, help="Compute each training sample's teacher logits once (right when no transform changes the inputs)."
    )


@attrs.define
class MeanTeacherConfig:
    decay: float = option(
        0.999,
        help="EMA decay α of the teacher (the reference code's default ema_decay).",
        validator=[v.ge(0.0), v.lt(1.0)],
    )
    weight: float = option(1.0, help="Weight of the consistency term once ramped up.", validator=v.ge(0.0))
    rampup: float = option(
        0.3,
        help="Fraction of the experience's steps over which the weight ramps up as exp(−5(1−t)²) (Laine & Aila, 2017).",
        validator=[v.ge(0.0), v.le(1.0)],
    )
    noise: float = option(
        0.0,
        help="Standard deviation of Gaussian noise on the teacher's input (the paper's input noise).",
        validator=v.ge(0.0),
    )


@attrs.define
class CoTeachingConfig:
    forget_rate: float = option(
        0.2,
        help="τ, the fraction of each batch dropped once ramped up; the paper sets it to the noise rate ε (Sec. 3).",
        validator=[v.ge(0.0), v.lt(1.0)],
    )
    gradual: int = option(
        10, help="T_k, epochs over which the dropped fraction ramps up (the paper's 10).", validator=v.ge(1)
    )
    exponent: float = option(
        1.0, help="c of the ramp τ^c (the reference code's exponent; the paper's c = 1).", validator=v.gt(0.0)
    )
    lr: float = option(0.001, help="The peer's Adam learning rate (the paper's 0.001).", validator=v.gt(0.0))
    betas: tuple[float, float] = option((0.9, 0.999), help="The peer's Adam betas (momentum 0.9, as in the paper).")


@attrs.define
class Net2WiderConfig:
    at_steps: list[int] = option(
        attrs.Factory(lambda: [50]),
        help="Optimizer steps (global count) after which the model widens.",
        validator=_steps,
    )
    factor: float = option(2.0, help="New hidden width = round(width · factor).", validator=v.gt(1.0))
    noise: float = option(
        0.0,
        help="Gaussian noise on the widened weights, relative to each layer's weight std (0 keeps the function exactly).",
        validator=v.ge(0.0),
    )


@attrs.define
class CurvatureConfig:
    samples: int = option(128, help="Samples of each test set the measures use (its first ones).", validator=v.ge(2))
    probes: int = option(16, help="Rademacher probes of Hutchinson's trace estimator.", validator=v.ge(2))


sam = Method(
    key="sam",
    summary="Sharpness-aware minimization around the plan's optimizer: a step from the gradient at w + ρ·g/‖g‖.",
    paper=Paper(
        "Sharpness-Aware Minimization for Efficiently Improving Generalization",
        2021,
        "2010.01412",
        "Foret, Kleiner, Mobahi & Neyshabur",
        "ICLR",
    ),
    hooks=("optimize",),
    implementation="paperkit.builtin.sharpness:SharpnessAware",
    config=SAMConfig,
    touches=("optimizer", "gradients"),
)
pcgrad = Method(
    key="pcgrad",
    summary="PCGrad: each loss term's gradient loses its components that conflict with the other terms'.",
    paper=Paper(
        "Gradient Surgery for Multi-Task Learning",
        2020,
        "2001.06782",
        "Yu, Kumar, Gupta, Levine, Hausman & Finn",
        "NeurIPS",
    ),
    hooks=("optimize",),
    implementation="paperkit.builtin.surgery:PCGrad",
    config=PCGradConfig,
    touches=("gradients",),
)
l2 = Method(
    key="l2",
    summary="An L2 penalty (λ/2)·‖θ‖² on the trainable parameters, as a named loss term.",
    paper=Paper("A Simple Weight Decay Can Improve Generalization", 1991, None, "Krogh & Hertz", "NeurIPS"),
    hooks=("regularize",),
    implementation="paperkit.builtin.penalty:L2",
    config=L2Config,
    touches=("loss",),
)
double_backprop = Method(
    key="double-backprop",
    summary="Double backpropagation: penalize the norm of each sample's input gradient (a second backward pass).",
    paper=Paper(
        "Improving Generalization Performance Using Double Backpropagation",
        1992,
        None,
        "Drucker & LeCun",
        "IEEE Transactions on Neural Networks",
    ),
    hooks=("regularize",),
    implementation="paperkit.builtin.penalty:DoubleBackprop",
    config=DoubleBackpropConfig,
    touches=("loss",),
)
layer_lr_decay = Method(
    key="layer-lr-decay",
    summary="Layer-wise learning-rate decay (lower layers train slower) and no weight decay on biases and norms.",
    paper=Paper(
        "ELECTRA: Pre-training Text Encoders as Discriminators Rather Than Generators",
        2020,
        "2003.10555",
        "Clark, Luong, Le & Manning",
        "ICLR",
    ),
    hooks=("optimize",),
    implementation="paperkit.builtin.groups:LayerLRDecay",
    config=LayerLRDecayConfig,
    touches=("schedule",),
)
distill = Method(
    key="distill",
    summary="Knowledge distillation: match a frozen teacher's softened outputs (T²-scaled KL) and the labels.",
    paper=Paper("Distilling the Knowledge in a Neural Network", 2015, "1503.02531", "Hinton, Vinyals & Dean"),
    hooks=("loss",),
    implementation="paperkit.builtin.teaching:Distill",
    config=DistillConfig,
    touches=("loss", "targets"),
    honours=("weight",),
)
mean_teacher = Method(
    key="mean-teacher",
    summary="Mean teacher: consistency with an exponential moving average of the model; reports the teacher's accuracy.",
    paper=Paper(
        "Mean teachers are better role models: Weight-averaged consistency targets improve semi-supervised deep learning results",
        2017,
        "1703.01780",
        "Tarvainen & Valpola",
        "NeurIPS",
    ),
    hooks=("regularize", "after_step", "evaluate"),
    implementation="paperkit.builtin.teaching:MeanTeacher",
    config=MeanTeacherConfig,
    touches=("loss", "metrics"),
)
co_teaching = Method(
    key="co-teaching",
    summary="Co-teaching: a peer network of the same shape; each trains on the small-loss samples of the other.",
    paper=Paper(
        "Co-teaching: Robust Training of Deep Neural Networks with Extremely Noisy Labels",
        2018,
        "1804.06872",
        "Han, Yao, Yu, Niu, Xu, Hu, Tsang & Sugiyama",
        "NeurIPS",
    ),
    hooks=("loss", "evaluate"),
    implementation="paperkit.builtin.teaching:CoTeaching",
    config=CoTeachingConfig,
    touches=("loss", "data", "metrics"),
    section="regularize",
)
net2wider = Method(
    key="net2wider",
    summary="Net2WiderNet: widen every hidden layer mid-run by replicating units, keeping the network's function.",
    paper=Paper(
        "Net2Net: Accelerating Learning via Knowledge Transfer", 2016, "1511.05641", "Chen, Goodfellow & Shlens", "ICLR"
    ),
    hooks=("grow",),
    implementation="paperkit.builtin.growth:Net2Wider",
    config=Net2WiderConfig,
    touches=("model", "parameters"),
)
curvature = Method(
    key="curvature",
    summary="Hessian trace (Hutchinson), gradient norms and the gradient noise scale on each test set.",
    paper=Paper(
        "An Empirical Model of Large-Batch Training",
        2018,
        "1812.06162",
        "McCandlish, Kaplan, Amodei & OpenAI Dota Team",
    ),
    hooks=("evaluate",),
    implementation="paperkit.builtin.curvature:Curvature",
    config=CurvatureConfig,
    touches=("metrics",),
)
