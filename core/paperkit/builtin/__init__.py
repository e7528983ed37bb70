"""Baseline methods, registered through entry points exactly like paper plugins.

Only the records live here (no torch); implementations are in the sibling
modules and load when a plan names them.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit.spec import Claim, Method, Paper, option


def _lr(default: float):
    return option(default, help="Learning rate.", validator=v.gt(0.0))


def _wd(default: float):
    return option(default, help="Weight decay.", validator=v.ge(0.0))


@attrs.define
class SGDConfig:
    lr: float = _lr(0.1)
    momentum: float = option(0.0, help="Momentum factor.", validator=[v.ge(0.0), v.lt(1.0)])
    nesterov: bool = option(False, help="Nesterov momentum.")
    weight_decay: float = _wd(0.0)


@attrs.define
class AdamConfig:
    lr: float = _lr(1e-3)
    betas: tuple[float, float] = option(
        (0.9, 0.999), help="Decay rates of the first and second moments (Kingma & Ba, 2015)."
    )
    eps: float = option(1e-8, help="Denominator term.", validator=v.gt(0.0))
    weight_decay: float = _wd(0.0)


@attrs.define
class AdamWConfig(AdamConfig):
    weight_decay: float = _wd(0.01)


@attrs.define
class CrossEntropyConfig:
    label_smoothing: float = option(0.0, help="Label smoothing.", validator=[v.ge(0.0), v.lt(1.0)])


def _targets(instance: object, attribute: attrs.Attribute, value: list) -> None:
    if not value or not all(isinstance(t, str) and t for t in value):
        raise ValueError(f"'{attribute.name}' must list at least one layer pattern")


@attrs.define
class LoRAConfig:
    rank: int = option(8, help="Rank r of the update B·A (PEFT's default r = 8).", validator=v.ge(1))
    alpha: float = option(
        8.0,
        help="The update is scaled by alpha / rank (Hu et al. 2021, Sec. 4.1); PEFT's default lora_alpha = 8.",
        validator=v.gt(0.0),
    )
    dropout: float = option(
        0.0, help="Dropout on the adapter's input (PEFT's default lora_dropout = 0).", validator=[v.ge(0.0), v.lt(1.0)]
    )
    target: list[str] = option(
        attrs.Factory(lambda: ["all-linear"]),
        help="Layers to adapt: globs over module names ('blocks.*.linear1', 'head') or 'all-linear' "
        "(every nn.Linear but the classifier head, PEFT's shorthand); see paperkit.adapters.",
        validator=_targets,
    )
    modules_to_save: list[str] = option(
        attrs.Factory(list),
        help="Modules trained whole beside the adapters, PEFT's modules_to_save: ['head'] when the classifier "
        "head is new (a pretrained encoder on a new task).",
    )


@attrs.define
class HeldOutProbeConfig:
    task: Literal["topics", "sentiment"] = option(
        "topics",
        help="The held-out text task the features are probed on: another domain than the plan's task.",
        validator=v.in_(("topics", "sentiment")),
    )
    per_class: int = option(
        40, help="Sentences per class of the held-out task (a quarter of them are its test set).", validator=v.ge(8)
    )
    seed: int = option(1, help="Seed of the held-out sentences (1: other sentences than a plan's default task).")


@attrs.define
class MixupConfig:
    alpha: float = option(
        1.0,
        help="α of λ ~ Beta(α, α). 1.0 is the authors' CIFAR setting (Sec. 3.2) and their reference code's default; "
        "the paper uses α in [0.1, 0.4] on ImageNet (Sec. 3.1).",
        validator=v.gt(0.0),
    )


@attrs.define
class ReplayConfig:
    buffer: int = option(200, help="Samples the reservoir buffer holds.", validator=v.ge(1))
    replay_batch: int | None = option(
        None, help="Replayed samples per step (default: the training batch size).", validator=v.optional(v.ge(1))
    )


_TORCH = Paper(
    "PyTorch: An Imperative Style, High-Performance Deep Learning Library", 2019, "1912.01703", "Paszke et al."
)

default_init = Method(
    key="default-init",
    summary="PyTorch's default initialization, re-drawn from the run seed.",
    paper=_TORCH,
    hooks=("init",),
    implementation="paperkit.builtin.basic:DefaultInit",
    touches=("parameters",),
)
sgd = Method(
    key="sgd",
    summary="Stochastic gradient descent with optional (Nesterov) momentum.",
    paper=Paper("A Stochastic Approximation Method", 1951, None, "Robbins & Monro", "Ann. Math. Statist."),
    hooks=("optimize",),
    implementation="paperkit.builtin.optim:SGD",
    config=SGDConfig,
    touches=("parameters", "optimizer"),
    exclusive=("optimizer",),
)
adam = Method(
    key="adam",
    summary="Adam.",
    paper=Paper("Adam: A Method for Stochastic Optimization", 2015, "1412.6980", "Kingma & Ba", "ICLR"),
    hooks=("optimize",),
    implementation="paperkit.builtin.optim:Adam",
    config=AdamConfig,
    touches=("parameters", "optimizer"),
    exclusive=("optimizer",),
)
adamw = Method(
    key="adamw",
    summary="Adam with decoupled weight decay.",
    paper=Paper("Decoupled Weight Decay Regularization", 2019, "1711.05101", "Loshchilov & Hutter", "ICLR"),
    hooks=("optimize",),
    implementation="paperkit.builtin.optim:AdamW",
    config=AdamWConfig,
    touches=("parameters", "optimizer"),
    exclusive=("optimizer",),
    claims=(
        Claim(
            id="adamw-vs-sgd",
            statement=(
                "Decoupling weight decay from the gradient step lets Adam compete with SGD with momentum "
                "on image classification, where Adam with L2 regularization was typically outperformed "
                "(abstract, Sec. 4): AdamW's test accuracy is at most 1 point below SGDM's at the same budget."
            ),
            plan="paperkit:claims/adamw_vs_sgd.toml",
            metric="classification/accuracy",
            variant="adamw",
            baseline="sgd",
            direction="higher",
            margin=-0.01,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.epochs=4",),
            quick_seeds=(0, 1, 2),
        ),
    ),
)
cross_entropy = Method(
    key="cross-entropy",
    summary="Softmax cross-entropy, the default loss; honours soft targets and per-sample weights.",
    paper=_TORCH,
    hooks=("loss",),
    implementation="paperkit.builtin.basic:CrossEntropy",
    config=CrossEntropyConfig,
    touches=("loss",),
    honours=("target", "weight"),
    kinds=("class", "next-token"),
)
mixup = Method(
    key="mixup",
    summary="mixup: train on convex combinations of sample pairs and of their targets, λ ~ Beta(α, α).",
    paper=Paper(
        "mixup: Beyond Empirical Risk Minimization", 2018, "1710.09412", "Zhang, Cisse, Dauphin & Lopez-Paz", "ICLR"
    ),
    hooks=("continual_step",),
    implementation="paperkit.builtin.mixing:Mixup",
    config=MixupConfig,
    touches=("data", "targets"),
    section="transform",
    batch_keys=("x", "target"),
)
mse = Method(
    key="mse",
    summary="Mean squared error, the default loss of regression tasks; honours per-sample weights.",
    paper=_TORCH,
    hooks=("loss",),
    implementation="paperkit.builtin.basic:MeanSquaredError",
    touches=("loss",),
    honours=("weight",),
    kinds=("regression",),
)
binary_cross_entropy = Method(
    key="binary-cross-entropy",
    summary="Binary cross-entropy per label, the default loss of multi-label tasks; honours soft targets and weights.",
    paper=_TORCH,
    hooks=("loss",),
    implementation="paperkit.builtin.basic:BinaryCrossEntropy",
    touches=("loss",),
    honours=("target", "weight"),
    kinds=("multi-label",),
)
multi_label = Method(
    key="multi-label",
    summary="mAP, micro F1 and binary cross-entropy on each test set; always active on multi-label tasks.",
    paper=_TORCH,
    hooks=("evaluate",),
    implementation="paperkit.builtin.basic:MultiLabel",
    touches=("metrics",),
    kinds=("multi-label",),
)
regression = Method(
    key="regression",
    summary="MSE, MAE and R² on each test set; always active on regression tasks.",
    paper=_TORCH,
    hooks=("evaluate",),
    implementation="paperkit.builtin.basic:Regression",
    touches=("metrics",),
    kinds=("regression",),
)
language_model = Method(
    key="language-model",
    summary="Next-token loss, perplexity and accuracy on each test set; always active on next-token tasks.",
    paper=_TORCH,
    hooks=("evaluate",),
    implementation="paperkit.builtin.basic:LanguageModel",
    touches=("metrics",),
    kinds=("next-token",),
)
classification = Method(
    key="classification",
    summary="Accuracy and cross-entropy on each test set; always active, fills the accuracy matrix.",
    paper=_TORCH,
    hooks=("evaluate",),
    implementation="paperkit.builtin.basic:Classification",
    touches=("metrics",),
)


def _check_text_model(plan: object, config: object) -> None:
    """The held-out probe feeds MiniLM token ids to the model: a model of the plan's text task must read them."""
    task = getattr(plan, "task", None)
    if getattr(task, "key", None) not in ("topics", "sentiment", "text-stream"):
        raise ValueError(
            f"probes the model's features on held-out sentences: use a text task (topics, sentiment, text-stream), "
            f"not '{getattr(task, 'key', '?')}'"
        )


held_out_probe = Method(
    key="held-out-probe",
    summary="What fine-tuning forgets: nearest-class-mean accuracy of the model's features on a held-out text task.",
    paper=Paper("LoRA Learns Less and Forgets Less", 2024, "2405.09673", "Biderman et al.", "TMLR"),
    hooks=("evaluate",),
    implementation="paperkit.builtin.probe:HeldOutProbe",
    config=HeldOutProbeConfig,
    touches=("metrics",),
    check="paperkit.builtin:_check_text_model",
)
naive = Method(
    key="naive",
    summary="Naive fine-tuning: train on each experience in turn, nothing else.",
    paper=Paper("Catastrophic Interference in Connectionist Networks", 1989, None, "McCloskey & Cohen"),
    hooks=("before_experience",),
    implementation="paperkit.builtin.basic:Naive",
)
replay = Method(
    key="replay",
    summary="Experience replay with a reservoir buffer: each batch is joined by as many stored samples.",
    paper=Paper("On Tiny Episodic Memories in Continual Learning", 2019, "1902.10486", "Chaudhry et al."),
    hooks=("continual_step", "after_step"),
    implementation="paperkit.builtin.reservoir:Replay",
    config=ReplayConfig,
    touches=("data",),
    batch_keys=("replay",),
)
lora = Method(
    key="lora",
    summary="LoRA: frozen linear layers plus a trained low-rank update (alpha/r)·B·A, A random and B zero.",
    paper=Paper(
        "LoRA: Low-Rank Adaptation of Large Language Models",
        2022,
        "2106.09685",
        "Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang & Chen",
        "ICLR",
    ),
    hooks=("adapt", "after_run"),
    implementation="paperkit.builtin.low_rank:LoRA",
    config=LoRAConfig,
    touches=("model", "parameters"),
    exclusive=("adapter",),  # it wraps the target layers: a second adapter would find none left to wrap
    claims=(
        Claim(
            id="lora-vs-full",
            statement=(
                "LoRA performs on par with full fine-tuning with far fewer trainable parameters (abstract): on the "
                "pretrained MiniLM, LoRA's test accuracy is at most 2 points below full fine-tuning's at equal steps."
            ),
            plan="paperkit:claims/lora_vs_full.toml",
            metric="classification/accuracy",
            variant="lora",
            baseline="full",
            direction="higher",
            margin=-0.02,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.max_steps=4", "task.per_class=16", "evaluate.0.per_class=8"),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="lora-forgets-less",
            statement=(
                "LoRA forgets less of what the pretrained model could do outside the fine-tuning domain than full "
                "fine-tuning: after fine-tuning MiniLM on sentiment, its features classify held-out topics better."
            ),
            plan="paperkit:claims/lora_vs_full.toml",
            metric="held-out-probe/accuracy",
            variant="lora",
            baseline="full",
            direction="higher",
            seeds=(0, 1, 2, 3, 4),
            quick=("run.max_steps=4", "task.per_class=16", "evaluate.0.per_class=8"),
            quick_seeds=(0, 1),
            paper=Paper("LoRA Learns Less and Forgets Less", 2024, "2405.09673", "Biderman et al.", "TMLR"),
        ),
    ),
)
