"""The records a plugin uses to describe itself, importable without torch.

A plugin's entry point resolves to a :class:`Method` (or :class:`TaskSpec` /
:class:`ModelSpec`). The record holds everything ``paperkit plugins``,
``paperkit show`` and ``paperkit plan check`` need: key, paper, config class,
declared hooks, what the method touches, claims. The code that does the work is
named by ``implementation`` (``"module:Class"``) and imported only when a plan
uses the method, so listing plugins never imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

import attrs
import pluggy

#: Version of the plugin API (``docs/api.md`` states the rules). A plugin whose
#: record says another version is listed as ``incompatible``, with what changed and
#: what to do, and never loaded. Additions (a new hook, a new argument a hook may
#: take, a new record field with a default, a new public name) keep the version;
#: removing or renaming any of those, or changing what a hook's result means,
#: bumps it.
API_VERSION = 1

#: What each plugin API version changed that breaks plugins of the previous one
#: (quoted in the one-line error an incompatible plugin gets).
API_CHANGES: dict[int, str] = {
    1: "the first declared plugin API: records, hooks and the public names of paperkit.__all__",
}

#: Marker for hook implementations on a method's implementation class.
hookimpl = pluggy.HookimplMarker("paperkit")

#: The one table of hooks: every hook, in the order the engine calls them, and the
#: plan section a method goes in when that hook is its main one. Everything else
#: derives from it (the hook specs are checked against it, the plan loader, the
#: test kit, ``paperkit new`` and the template read it).
HOOK_SECTIONS: dict[str, str] = {
    "init": "init",
    "adapt": "adapt",
    "optimize": "optimize",
    "before_experience": "continual",
    "continual_step": "continual",
    "loss": "regularize",
    "regularize": "regularize",
    "after_step": "evaluate",
    "grow": "adapt",
    "after_experience": "continual",
    "evaluate": "evaluate",
    "after_run": "evaluate",
}

#: The hooks a method may implement, in the order the engine calls them.
HOOKS: tuple[str, ...] = tuple(HOOK_SECTIONS)

#: Which of a method's hooks decides its section, first match wins (a method with
#: ``init`` and ``evaluate`` goes under ``[init]``; one with ``continual_step`` and
#: ``after_step`` under ``[continual]``).
SECTION_PRECEDENCE: tuple[str, ...] = (
    "init",
    "adapt",
    "optimize",
    "regularize",
    "evaluate",
    "continual_step",
    "loss",
    "before_experience",
    "after_experience",
    "after_step",
    "grow",
    "after_run",
)

#: Plan sections in the order their methods are called, and the hooks a method
#: placed there must implement at least one of (it may implement more).
#: ``[transform]`` holds single-task batch transforms (augmentation, mixing,
#: selection: ``continual_step`` methods whose record says ``section = "transform"``);
#: they run before the ``[continual]`` methods' transforms.
SECTION_HOOKS: dict[str, tuple[str, ...]] = {
    "init": ("init",),
    "adapt": ("adapt", "grow"),
    "optimize": ("optimize",),
    "transform": ("continual_step",),
    "regularize": ("regularize", "loss"),
    "evaluate": ("evaluate", "after_step", "after_run"),
    "continual": ("continual_step", "before_experience", "after_experience"),
}


def home_section(hooks: tuple[str, ...] | list[str], declared: str | None = None) -> str:
    """The plan section a method with these ``hooks`` belongs in (its record's ``section`` if it declares one)."""
    if declared is not None:
        return declared
    for hook in SECTION_PRECEDENCE:
        if hook in hooks:
            return HOOK_SECTIONS[hook]
    raise ValueError(f"no plan section takes hooks {tuple(hooks)}")


@attrs.frozen
class TargetKind:
    """What a task predicts, and what follows from it: the loss a plan gets when it names none, the
    built-in evaluate method that always runs, and the headline metric that fills the accuracy matrix
    (``direction`` says whether higher or lower is better; stream metrics respect it)."""

    name: str
    y: str
    loss: str
    evaluate: str
    headline: str
    direction: Literal["higher", "lower"]


#: The target kinds a task may declare (``TaskSpec.kind``) and a method may support (``Method.kinds``).
KINDS: dict[str, TargetKind] = {
    k.name: k
    for k in (
        TargetKind(
            "class", "integer class labels (B,)", "cross-entropy", "classification", "classification/accuracy", "higher"
        ),
        TargetKind(
            "multi-label",
            "multi-hot float labels (B, labels)",
            "binary-cross-entropy",
            "multi-label",
            "multi-label/mAP",
            "higher",
        ),
        TargetKind("regression", "float targets (B, outputs)", "mse", "regression", "regression/r2", "higher"),
        TargetKind(
            "next-token",
            "the next token at every position (B, T)",
            "cross-entropy",
            "language-model",
            "language-model/loss",
            "lower",
        ),
    )
}

#: Hooks that see targets or predictions: a method implementing one of them supports only the ``class``
#: kind unless its record lists others in ``kinds``. Methods with none of them (optimizers, inits,
#: adapters, schedules) work with any kind.
TARGET_HOOKS: frozenset[str] = frozenset({"loss", "regularize", "evaluate", "continual_step"})


#: Batch keys with a meaning every core part knows (the batch contract). Methods
#: may add any other key; its value must be a tensor whose first dimension is the
#: batch size, so that transforms (replay, mixing, selection) can carry it along.
BATCH_KEYS: dict[str, str] = {
    "x": "inputs, shape (B, ...)",
    "y": "the targets, as the task kind says (KINDS): class labels (B,), multi-hot labels, regression values, next tokens",
    "index": "each sample's index in its experience's training set, shape (B,)",
    "target": "soft targets: one probability vector per sample, shape (B, classes); replaces one-hot(y) in the loss",
    "weight": "per-sample loss weights, shape (B,); the loss is mean(weight * per-sample loss)",
    "replay": "bool mask of the samples a replay method added, shape (B,)",
    "label_mask": "multi-label: 1 where a label entry is observed, 0 where it is unknown, shape (B, labels)",
    "env": "the training environment of each sample (multi-environment tasks), shape (B,)",
    "clean_y": "the label before the core's label noise ([task] label_noise), shape (B,)",
}

#: What a loss may declare it honours (``Method.honours``): the batch keys a method
#: may set for the loss to act on.
HONOURABLE: frozenset[str] = frozenset({"target", "weight"})

#: What a method may declare it touches. Used for plan explanations and for
#: conflicts: two methods that both declare the same thing in ``exclusive``
#: cannot share a plan (``"adapter"``: it replaces the target layers by adapter
#: layers, so a second adapter would find none of them left to wrap).
TOUCHES: frozenset[str] = frozenset(
    {
        "loss",
        "targets",
        "weights",
        "gradients",
        "parameters",
        "data",
        "model",
        "optimizer",
        "schedule",
        "metrics",
        "adapter",
    }
)

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def option(default: Any = attrs.NOTHING, *, help: str, validator: Any = None, **kwargs: Any) -> Any:
    """An ``attrs`` field for a method, task or model config, with help text.

    ``help`` is required: ``paperkit show`` and the docs print it beside the
    default, and a default without a reason is how paper defaults get lost.
    """
    metadata = dict(kwargs.pop("metadata", {}) or {})
    metadata["help"] = help
    return attrs.field(default=default, validator=validator, metadata=metadata, **kwargs)


@attrs.frozen
class Paper:
    """Where a method comes from."""

    title: str
    year: int
    arxiv: str | None = None
    authors: str = ""
    venue: str = ""
    url: str | None = None

    @property
    def link(self) -> str:
        if self.url:
            return self.url
        return f"https://arxiv.org/abs/{self.arxiv}" if self.arxiv else ""


def _as_tuple(value: Any) -> tuple[Any, ...]:
    """attrs converter: any iterable of seeds or overrides as a tuple (typed, unlike the ``tuple`` builtin)."""
    return tuple(value)


@attrs.frozen
class Claim:
    """A paper's claim in a form ``paperkit verify`` can check.

    The plan named by ``plan`` (``"package:relative/path.toml"``) defines two or
    more variants; the verdict compares ``metric`` between ``variant`` and
    ``baseline`` over ``seeds``: the claim is *supported* when the difference
    in the stated ``direction`` exceeds ``margin`` with confidence, *not
    supported* when it is confidently below, and *inconclusive* otherwise.
    ``quick`` holds ``--set`` style overrides for a smaller CI budget.
    ``margin`` is in the metric's units and in the claimed direction (negative:
    "at most that much worse", a non-inferiority claim); ``confidence`` is the
    two-sided level of the interval (see :mod:`paperkit.stats`).
    """

    id: str
    statement: str
    plan: str
    metric: str
    variant: str
    baseline: str
    direction: Literal["higher", "lower"] = attrs.field(default="higher", validator=lambda i, a, v: _check_direction(v))
    margin: float = 0.0
    seeds: tuple[int, ...] = attrs.field(
        default=(0, 1, 2), converter=_as_tuple, validator=lambda i, a, v: _check_seeds(a, v)
    )
    quick: tuple[str, ...] = attrs.field(default=(), converter=_as_tuple)
    quick_seeds: tuple[int, ...] = attrs.field(
        default=(0, 1), converter=_as_tuple, validator=lambda i, a, v: _check_seeds(a, v)
    )
    confidence: float = attrs.field(default=0.95, validator=lambda i, a, v: _check_confidence(v))
    #: the paper the claim is from, when not the method's own (a method published under two titles: ``Method.also``)
    paper: Paper | None = None


def _check_seeds(attribute: Any, value: tuple[int, ...]) -> None:
    if not value or len(set(value)) != len(value) or any(not isinstance(s, int) or s < 0 for s in value):
        raise ValueError(f"claim {attribute.name} must be distinct integers >= 0, got {value!r}")


def _check_direction(value: str) -> None:
    if value not in ("higher", "lower"):
        raise ValueError(f"claim direction must be 'higher' or 'lower', got {value!r}")


def _check_confidence(value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"claim confidence must be in (0, 1), got {value!r}")


def _check_kind(value: str) -> None:
    if value not in KINDS:
        raise ValueError(f"unknown task kind {value!r} (known: {', '.join(KINDS)})")


def _check_key(instance: Any, attribute: Any, value: str) -> None:
    if not KEY_PATTERN.match(value):
        raise ValueError(f"invalid key {value!r}: use lowercase letters, digits and single dashes")


@attrs.frozen
class Method:
    """One paper's method as a plugin exposes it through ``paperkit.methods``.

    Besides what it is (``key``, ``summary``, ``paper``, ``claims``) and where its
    code is (``implementation``, ``config``), a record declares how it composes,
    so that ``paperkit plan check`` refuses a combination before anything trains:

    ``hooks``       the hooks the implementation implements (checked on load)
    ``touches``     what it changes (``TOUCHES``), shown by ``plan explain``
    ``exclusive``   what no other method in the plan may also claim
    ``section``     its plan section when not the one its hooks imply (``"transform"``)
    ``batch_keys``  batch keys it adds or rewrites (``"target"``, ``"weight"``, its own);
                    the plan's loss must honour ``target``/``weight`` when listed
    ``honours``     for a ``loss``: the batch keys it takes into account (``HONOURABLE``)
    ``after``       methods it must run after: keys, or ``"touches:X"`` for any method touching X
    ``before``      the same, the other way round
    ``kinds``       the task target kinds it supports (``KINDS``); ``None``: ``class`` only when it
                    implements a hook that sees targets (``TARGET_HOOKS``), any kind otherwise
    ``check``       what else it needs of the plan (a model with maxout units, a validation split,
                    no other method acting during training): ``check(plan, config)``, a function or its
                    ``"module:function"`` path, that raises ``ValueError`` with one line saying what is
                    wrong; ``paperkit plan check`` (and every run) calls it with the resolved plan, so a
                    plan the method cannot run is refused before anything trains
    """

    key: str = attrs.field(validator=_check_key)
    summary: str
    paper: Paper
    hooks: tuple[str, ...]
    implementation: str | type = attrs.field()
    config: type | None = None
    touches: tuple[str, ...] = ()
    exclusive: tuple[str, ...] = ()
    claims: tuple[Claim, ...] = ()
    api_version: int = API_VERSION
    section: str | None = None
    batch_keys: tuple[str, ...] = ()
    honours: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    before: tuple[str, ...] = ()
    #: further papers the same method was published under (one distribution, one claim each)
    also: tuple[Paper, ...] = ()
    kinds: tuple[str, ...] | None = None
    #: SPDX id of the plugin's license (``None``: the distribution's metadata says; see ``paperkit plugins``)
    license: str | None = None
    #: ``check(plan, config)`` or its ``"module:function"`` path: raises ValueError when the plan cannot work
    check: str | Any | None = None

    def supports(self, kind: str) -> bool:
        """Whether the method works on a task of target kind ``kind``."""
        if self.kinds is not None:
            return kind in self.kinds
        return kind == "class" or not (set(self.hooks) & TARGET_HOOKS)

    @implementation.validator
    def _check_impl(self, attribute: Any, value: Any) -> None:
        if isinstance(value, str) and ":" not in value:
            raise ValueError(f"implementation {value!r} must be 'module:Class'")

    def problems(self) -> list[str]:
        """Static problems in the record itself (no import of the implementation)."""
        from paperkit.errors import did_you_mean

        out = []
        for hook in self.hooks:
            if hook not in HOOKS:
                out.append(f"declares unknown hook '{hook}'{did_you_mean(hook, HOOKS)}")
        for name in (*self.touches, *self.exclusive):
            if name not in TOUCHES:
                out.append(f"declares unknown touch '{name}' (known: {', '.join(sorted(TOUCHES))})")
        if self.section is not None:
            if self.section not in SECTION_HOOKS:
                out.append(
                    f"declares unknown section '{self.section}'{did_you_mean(self.section, tuple(SECTION_HOOKS))}"
                )
            elif not set(self.hooks) & set(SECTION_HOOKS[self.section]):
                out.append(
                    f"declares section '{self.section}' but none of its hooks {', '.join(SECTION_HOOKS[self.section])}"
                )
        for name in self.honours:
            if name not in HONOURABLE:
                out.append(f"honours unknown batch key '{name}' (known: {', '.join(sorted(HONOURABLE))})")
        if self.honours and "loss" not in self.hooks:
            out.append("declares honours but does not implement the loss hook")
        for name in self.batch_keys:
            if name in ("x", "y", "index") and "continual_step" not in self.hooks:
                out.append(f"declares batch key '{name}' but no continual_step hook that could write it")
        for entry in (*self.after, *self.before):
            if entry.startswith("touches:"):
                if entry.removeprefix("touches:") not in TOUCHES:
                    out.append(f"orders itself by unknown touch '{entry}' (known: {', '.join(sorted(TOUCHES))})")
            elif not KEY_PATTERN.match(entry):
                out.append(f"orders itself by '{entry}', which is neither a method key nor 'touches:X'")
        for kind in self.kinds or ():
            if kind not in KINDS:
                out.append(f"supports unknown kind '{kind}'{did_you_mean(kind, KINDS)} (known: {', '.join(KINDS)})")
        if self.config is not None and not attrs.has(self.config):
            out.append("config must be an attrs class")
        if not self.hooks:
            out.append("declares no hooks")
        return out

    @property
    def home(self) -> str:
        """The plan section this method belongs in."""
        return home_section(self.hooks, self.section)


@attrs.frozen
class TaskSpec:
    """An embedded or user task registered through ``paperkit.tasks``.

    ``factory`` (``"module:function"``) is called as ``factory(config)`` and
    returns a :class:`paperkit.tasks.base.Task`. ``kind`` is what it predicts
    (:data:`KINDS`): it decides the default loss, the built-in metrics and the
    headline metric, and which methods the plan check admits.
    """

    key: str = attrs.field(validator=_check_key)
    summary: str
    factory: str | Callable[..., Any]
    config: type | None = None
    api_version: int = API_VERSION
    kind: str = attrs.field(default="class", validator=lambda i, a, v: _check_kind(v))


@attrs.frozen
class ModelSpec:
    """A model factory registered through ``paperkit.models``.

    ``factory`` is called as ``factory(config, info)`` with the task's
    :class:`paperkit.tasks.base.TaskInfo` and returns an ``nn.Module``.
    """

    key: str = attrs.field(validator=_check_key)
    summary: str
    factory: str | Callable[..., Any]
    config: type | None = None
    api_version: int = API_VERSION


def resolve(target: str | Any) -> Any:
    """Import ``"module:attr"`` (dotted attrs allowed); pass anything else through."""
    if not isinstance(target, str):
        return target
    import importlib

    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
