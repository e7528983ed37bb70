"""What hooks receive: the run context, the batch, model outputs, evaluation sets, optimization parts."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import torch
from torch import nn

if TYPE_CHECKING:
    from accelerate import Accelerator

    from paperkit.plan import Plan
    from paperkit.tasks.base import Experience, Task
    from paperkit.teachers import Teacher

#: A training batch: a dict of tensors whose first dimension is the batch size.
#: Always ``x`` (inputs), ``y`` (integer labels) and ``index`` (each sample's index
#: in its experience's training set). Methods may add keys; the ones every built-in
#: loss understands are ``target`` (soft targets, one probability vector per sample)
#: and ``weight`` (per-sample loss weights); see :data:`paperkit.BATCH_KEYS`. Every
#: core transform (replay among them) keeps the keys it did not create.
Batch = dict[str, torch.Tensor]


@attrs.define
class Outputs:
    """The forward pass: ``logits`` always; ``features`` when the model is a Classifier; ``active`` in
    task-incremental streams: the bool mask (classes,) of the classes the experience may predict (the others'
    logits are masked to -1e9), so a loss that normalizes over classes can leave them out."""

    logits: torch.Tensor
    features: torch.Tensor | None = None
    active: torch.Tensor | None = None


@attrs.define
class Optimization:
    """A method's contribution to optimization (see the ``optimize`` hook).

    ``optimizer``: the optimizer (exactly one per plan). ``lr_factor(step)``:
    a multiplier of every group's base learning rate at optimizer step ``step``
    of the experience (factors multiply). ``grad_transform(model)``: edits
    ``.grad`` in place after backward and before the step (transforms chain).

    The parts below cost nothing when no method sets them:

    ``param_rule(name, parameter)``: multipliers of the optimizer's group
    hyperparameters for one parameter (``{"lr": 0.5, "weight_decay": 0.0}``),
    whatever optimizer the plan uses; the engine splits the optimizer's groups
    by the multipliers before the first step (rules of several methods multiply).
    ``wrap(optimizer)``: an optimizer around the plan's optimizer (SAM's ascent
    around any base step); wrappers nest in plan order. ``closure``: the
    optimizer's ``step`` takes a closure that re-evaluates the loss on the same
    batch (see :meth:`paperkit.step.TrainingStep.closure`). ``term_gradients``:
    receives the gradient of every named loss term separately (``{"loss": [...],
    "<key>/<term>": [...]}``, one tensor per trainable parameter, averaged over
    processes) and returns the gradients to step with (gradient surgery; one
    method per plan).
    """

    optimizer: torch.optim.Optimizer | None = None
    lr_factor: Callable[[int], float] | None = None
    grad_transform: Callable[[nn.Module], None] | None = None
    param_rule: Callable[[str, nn.Parameter], Mapping[str, float]] | None = None
    wrap: Callable[[torch.optim.Optimizer], torch.optim.Optimizer] | None = None
    closure: bool = False
    term_gradients: Callable[[dict[str, list[torch.Tensor]]], list[torch.Tensor]] | None = None


@attrs.define(eq=False)
class EvalSet:
    """One evaluation set, shared by every evaluate method: an experience's test data (``split = "test"``) or one
    of its out-of-distribution test sets (``split = "ood:<name>"``, ``experience.ood[name]``); ``phase`` is
    ``"initial"`` (before training) or ``"experience_end"``."""

    experience: Experience
    loader: Any
    phase: str
    _predict: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    _cache: tuple[torch.Tensor, torch.Tensor] | None = None
    split: str = "test"
    predict_features: Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
    _features: torch.Tensor | None = None

    def predictions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, targets) over the whole set, gathered from every process, computed once."""
        if self._cache is None:
            self._cache = self._predict()
        return self._cache

    def features(self) -> torch.Tensor:
        """The model's features (``Outputs.features``: the penultimate layer) over the whole set, in the order of
        :meth:`predictions`, gathered from every process, computed once; asked before the predictions, one pass
        gives both, asked after them, it takes a second pass."""
        if self._features is None:
            if self.predict_features is None:
                raise ValueError("this evaluation set was built without features")
            logits, targets, self._features = self.predict_features()
            if self._cache is None:
                self._cache = (logits, targets)
        return self._features


@attrs.define(eq=False)
class RunContext:
    """State of the run that hooks may read. Methods keep their own state on themselves.

    ``accelerator`` is the run's Accelerate object (device, processes, ``gather``);
    ``plan`` the validated plan (``plan.run`` its ``[run]`` table); ``seed`` the run
    seed; ``task`` the task (``task.info.num_classes``, ``task.experiences``);
    ``run_dir`` the run directory (files a method writes go here, main process
    only). During training: ``experience`` (the current one), ``epoch``, ``step``
    (optimizer steps so far, all experiences), ``experience_step``, ``total_steps``
    (planned for this experience), ``steps_per_epoch`` and ``train_loader`` (one
    pass over this process's share of the epoch). ``method`` is the key of the
    method whose hook runs (what :meth:`generator` keys on). The engine fills the
    callables behind :meth:`evaluate`, :meth:`sample_batches` and
    :meth:`resolve_weights`; methods call those, not the attributes.
    """

    accelerator: Accelerator
    plan: Plan
    seed: int
    task: Task
    run_dir: Path
    experience: Experience | None = None
    epoch: int = 0
    step: int = 0
    experience_step: int = 0
    total_steps: int = 0
    steps_per_epoch: int = 0
    train_loader: Any = None
    #: set by the engine: evaluate(model, experience indices) -> {index: metrics}
    evaluator: Callable[[nn.Module, list[int]], dict[int, dict[str, float]]] | None = None
    #: set by the engine: a few training batches for data-dependent init
    batch_sampler: Callable[[int], list[Batch]] | None = None
    #: set by the engine: builds an EvalSet over any dataset (see :meth:`eval_set`)
    eval_set_builder: Callable[..., Any] | None = None
    #: set by the engine: turns a weights path or ``variant:`` reference into a file (see :mod:`paperkit.references`)
    weights_resolver: Callable[..., Path] | None = None
    #: set by the engine: builds the teacher of the frozen models weights references name (see :meth:`teacher`)
    teacher_builder: Callable[[list[str], str, bool], Teacher] | None = None
    #: the key of the method whose hook is running (set by the dispatcher before every hook call)
    method: str | None = None
    #: true while a closure step re-evaluates the loss on the same batch: ``loss`` and ``regularize`` run
    #: again, and a method that updates state in them (per-sample targets, running statistics) skips that
    reevaluating: bool = False
    #: true while ``--resume`` replays the ``grow`` calls that shaped the checkpointed model
    replaying: bool = False
    #: this process's loss scale in the step in progress (see :mod:`paperkit.engine`); 1.0 on one process
    share: float = 1.0
    _generators: dict[str, Any] = attrs.field(factory=dict, init=False, repr=False)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def experience_index(self) -> int:
        return self.experience.index if self.experience is not None else 0

    def generator(self, name: str = "default") -> torch.Generator:
        """A CPU ``torch.Generator`` of the calling method's own, seeded from the run seed, the method key and ``name``.

        The engine saves every generator handed out in each checkpoint and restores
        it bit for bit on ``--resume``, so a method that draws only from its
        generators (never from the global RNG) resumes exactly and does not shift
        the draws of other methods. Draw on the CPU and move the result, so runs on
        different devices see the same numbers.
        """
        key = f"{self.method or 'run'}/{name}"
        found = self._generators.get(key)
        if found is None:
            found = torch.Generator().manual_seed(_derived_seed(self.seed, key))
            self._generators[key] = found
        return found

    def numpy_generator(self, name: str = "default") -> Any:
        """A ``numpy.random.Generator`` (PCG64) of the calling method's own; checkpointed like :meth:`generator`."""
        import numpy

        key = f"{self.method or 'run'}/{name}#numpy"
        found = self._generators.get(key)
        if found is None:
            found = numpy.random.Generator(numpy.random.PCG64(_derived_seed(self.seed, key)))
            self._generators[key] = found
        return found

    def generator_state(self) -> dict[str, Any]:
        """Every generator handed out so far, as checkpoint data."""
        return {
            key: g.get_state() if isinstance(g, torch.Generator) else g.bit_generator.state
            for key, g in self._generators.items()
        }

    def load_generator_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`generator_state` exactly: the generators it names at their saved state, no others
        (a generator first used later starts from its seed, as it did in the saved run)."""
        self._generators.clear()
        for key, value in state.items():
            method, _, name = key.partition("/")
            previous, self.method = self.method, None if method == "run" else method
            try:
                if name.endswith("#numpy"):
                    self.numpy_generator(name.removesuffix("#numpy")).bit_generator.state = value
                else:
                    self.generator(name).set_state(value)
            finally:
                self.method = previous

    def sample_batches(self, n: int = 1) -> list[Batch]:
        """``n`` training batches of the first experience, on the device (for data-dependent init)."""
        assert self.batch_sampler is not None
        return self.batch_sampler(n)

    def evaluate(self, model: nn.Module, experiences: list[int]) -> dict[int, dict[str, float]]:
        """Accuracy and loss of ``model`` on the test sets of ``experiences`` (all processes agree)."""
        assert self.evaluator is not None
        return self.evaluator(model, experiences)

    def eval_set(self, model: nn.Module, dataset: Any, split: str = "train") -> EvalSet:
        """An evaluation set over ``dataset`` (``ctx.experience.train``, ``.valid``, a test set), built and gathered
        over processes exactly as the engine's own (``predictions()``, ``features()``): for methods that measure
        on the training set (neural collapse, memorization) or calibrate on the validation set."""
        assert self.eval_set_builder is not None
        return self.eval_set_builder(model, dataset, split)

    def resolve_weights(self, value: str, where: str = "") -> Path:
        """The weights file a plan names: a path (relative to the plan file) or ``variant:NAME[@SEED|@+K]``.

        A reference gives the ``model.safetensors`` of that variant's run, made before this run
        started (see :mod:`paperkit.references`). ``where`` (``"file: [adapt] key"``) prefixes error
        messages.
        """
        if self.weights_resolver is None:  # a context built by hand: plain paths only
            from paperkit.references import Resolver

            self.weights_resolver = Resolver(self.plan)
        return self.weights_resolver(value, where)

    def teacher(self, weights: str | list[str], where: str = "", cache: bool = False) -> Teacher:
        """A frozen model to learn from: the weights ``weights`` names (a path, or ``variant:NAME[@SEED|@+K]``:
        that variant of this plan, run first, built from *its* plan, so a teacher may be wider or deeper), in
        evaluation mode on the run's device, without gradients. Several references give their averaged
        prediction (an ensemble). ``cache`` keeps each training sample's logits by ``batch["index"]``: right
        for a fixed teacher on inputs that no transform changes from epoch to epoch.
        """
        if self.teacher_builder is None:
            raise RuntimeError("ctx.teacher needs a run's context (the engine's, or paperkit.testing's harness)")
        names = [weights] if isinstance(weights, str) else list(weights)
        if not names:
            raise ValueError("a teacher needs at least one weights reference")
        return self.teacher_builder(names, where, cache)

    def save_weights(self, model: nn.Module, name: str) -> Path | None:
        """Write ``<run_dir>/<name>.safetensors`` from the main process; returns the path there.

        Every process calls it and every process returns only once the file is on disk: a variant
        run's weights are read by all processes of the run that referenced it, right after.
        """
        from paperkit.weights import save_weights

        path = self.run_dir / f"{name}.safetensors"
        if self.is_main_process:
            save_weights(self.accelerator.unwrap_model(model), path)
        self.accelerator.wait_for_everyone()
        return path


def _derived_seed(seed: int, key: str) -> int:
    """A 63-bit seed from the run seed and a generator's key, the same in every Python process."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
