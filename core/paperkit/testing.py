"""pytest plugin for paperkit and plugin authors (registered through ``pytest11``).

Fixtures
--------

``paperkit_registry``  a fresh :class:`~paperkit.registry.Registry` with autoload
                       off plus the built-in baselines, tasks and models
``run_plan``           ``run_plan(toml_text, registry=None, seed=None)`` runs a plan
                       in a temporary directory and returns ``(results, manifest)``
``tiny_task``          a tiny seeded task (Gaussian blobs, 4 classes, 16 features);
                       plans can name it too: ``[task] name = "paperkit.testing:tiny_task"``

Conformance suites
------------------

A plugin checks itself against every contract of the hooks it implements with
one class::

    from paperkit.testing import ConformanceSuite

    class TestConformance(ConformanceSuite):
        key = "my-method"

Optional class attributes: ``options`` (the method's config values for the
smoke plan), ``plan_extra`` (TOML merged into the smoke plan, e.g. an
``[optimize]`` entry), ``task`` (``"digits"``), ``task_options``, ``model``
(``"mlp"``), ``model_options``, ``section`` (the plan section the method is
placed in; guessed from its hooks). Each test checks one contract of one hook
and skips itself when the method does not implement that hook.

The ``adapt`` contracts use optional capabilities of the implementation object
(duck-typed, nothing to inherit):

``preserves_output = True``      the adapted model computes what the base model
                                 computed, before any training (LoRA with B = 0,
                                 PiSSA's residual split, DoRA's magnitude)
``merge(model) -> model|None``   fold the adapter into plain weights; the merged
                                 model computes what the adapted one computed
``unmerge(model) -> model|None`` undo ``merge`` (adapter structure kept)
``adapter_parameters(model)``    names of exactly the parameters that train;
                                 every other parameter must be frozen

Everything a method keeps between steps must round-trip through
``state_dict()`` / ``load_state_dict(state)`` on the implementation object,
serialized as a checkpoint would be (``torch.save`` and
``torch.load(weights_only=True)``): tensors, numbers, strings, lists and dicts.

Import stays light: torch is imported inside fixtures and tests, so installing
paperkit never slows down unrelated test suites.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

#: Budget of every smoke run: small enough for seconds, large enough to train.
SMOKE_RUN: dict[str, Any] = {
    "name": "conformance",
    "seeds": [0],
    "epochs": 1,
    "max_steps": 6,
    "batch_size": 32,
    "save_model": False,
    "log_every": 1,
}
#: Model options of the smoke plan when the suite keeps the default ``mlp``.
SMOKE_MLP: dict[str, Any] = {"depth": 1, "width": 32}
#: The optimizer a smoke plan gets when neither the method nor ``plan_extra`` provides one.
DEFAULT_OPTIMIZER: dict[str, Any] = {"use": "adamw", "lr": 0.01}
STREAM_TASKS = ("split-digits", "permuted-digits")
STREAM_EXPERIENCES = 5


def builtin_registry() -> Any:
    """A registry holding only paperkit's own methods, tasks and models."""
    from paperkit import builtin, models, tasks
    from paperkit.builtin import capabilities
    from paperkit.registry import Registry
    from paperkit.spec import Method, ModelSpec, TaskSpec

    registry = Registry(autoload=False)
    for module in (builtin, capabilities, tasks, models):
        for value in vars(module).values():
            if isinstance(value, (Method, TaskSpec, ModelSpec)):
                registry.add(value, distribution="paperkit")
    return registry


@pytest.fixture
def paperkit_registry() -> Any:
    return builtin_registry()


def run_plan_text(
    text: str,
    directory: Path,
    registry: Any = None,
    seed: int | None = None,
    variant: str | None = None,
    overrides: tuple[str, ...] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run a plan given as TOML text; ``(results, manifest)`` of its run directory."""
    result = _run_text(text, directory, registry, seed, variant, overrides)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    return result.results, manifest


def _run_text(
    text: str,
    directory: Path,
    registry: Any = None,
    seed: int | None = None,
    variant: str | None = None,
    overrides: tuple[str, ...] = (),
) -> Any:
    from paperkit.executor import run_with_references as run
    from paperkit.plan import load_plan
    from paperkit.registry import Registry

    registry = registry if registry is not None else Registry()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plan_path = directory / "plan.toml"
    plan_path.write_text(text, encoding="utf-8")
    plan = load_plan(
        plan_path, [*overrides, f"run.output={json.dumps(str(directory / 'runs'))}"], variant=variant, registry=registry
    )
    return run(plan, plan.run.seeds[0] if seed is None else seed, registry)


def run_plan_file(
    path: str | Path,
    output: str | Path,
    overrides: tuple[str, ...] | list[str] = (),
    seed: int | None = None,
    variant: str | None = None,
    resume: str | Path | None = None,
    registry: Any = None,
) -> Any:
    """Run the plan file ``path`` for one seed with its run directory under ``output``, optionally resuming
    ``resume`` (a run directory); the engine's ``RunResult`` (``run_dir``, ``results``)."""
    from paperkit.executor import run_with_references as run
    from paperkit.plan import load_plan
    from paperkit.registry import Registry

    registry = registry if registry is not None else Registry()
    plan = load_plan(path, [*overrides, f"run.output={json.dumps(str(output))}"], variant=variant, registry=registry)
    return run(plan, plan.run.seeds[0] if seed is None else seed, registry, resume=Path(resume) if resume else None)


def interrupt_and_resume(
    path: str | Path,
    directory: str | Path,
    at_step: int | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    registry: Any = None,
    after_experience: int | None = None,
    variant: str | None = None,
) -> tuple[Any, Any]:
    """Run ``path`` (its ``variant``, default the plan itself) uninterrupted, then again with Ctrl-C after
    optimizer step ``at_step`` (or at the boundary after experience ``after_experience``, where the run
    checkpoints between experiences) and ``--resume``; ``(uninterrupted, resumed)`` run results, to compare
    (metrics and ``model.safetensors`` bit for bit). Runs of other variants that references start are not
    interrupted."""
    import signal

    from paperkit import engine
    from paperkit import step as step_module

    if (at_step is None) == (after_experience is None):
        raise ValueError("give exactly one of at_step and after_experience")
    directory = Path(directory)
    reference = run_plan_file(path, directory / "uninterrupted", overrides, variant=variant, registry=registry)
    original_step, original_evaluate = step_module.TrainingStep.__call__, engine.evaluate_all

    def interrupting(self: Any, model: Any, batch: Any, share: float = 1.0) -> Any:
        out = original_step(self, model, batch, share)
        if self.ctx.step == at_step and self.ctx.plan.variant == variant:  # not inside a run a reference starts
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C does: the run checkpoints after this step and stops
        return out

    def evaluating(model: Any, task: Any, methods: Any, plan: Any, ctx: Any, phase: str) -> Any:
        out = original_evaluate(model, task, methods, plan, ctx, phase)
        if phase == "experience_end" and ctx.experience_index == after_experience and plan.variant == variant:
            signal.raise_signal(signal.SIGINT)  # between experiences: the boundary checkpoint, then the stop
        return out

    step_module.TrainingStep.__call__ = interrupting  # type: ignore[method-assign]
    engine.evaluate_all = evaluating
    try:
        try:
            run_plan_file(path, directory / "interrupted", overrides, variant=variant, registry=registry)
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError(
                f"the run ended before the interruption (step {at_step}, experience {after_experience})"
            )
    finally:
        step_module.TrainingStep.__call__ = original_step  # type: ignore[method-assign]
        engine.evaluate_all = original_evaluate
    (run_dir,) = (d for d in (directory / "interrupted").iterdir() if (d / "checkpoint.safetensors").exists())
    resumed = run_plan_file(
        path, directory / "interrupted", overrides, variant=variant, resume=run_dir, registry=registry
    )
    return reference, resumed


def assert_same_run(a: Any, b: Any) -> None:
    """Two completed runs ended alike: the same final metrics, accuracy matrix and summary, and bit-identical weights."""
    from safetensors.torch import load_file

    for key in ("status", "final", "accuracy_matrix", "summary", "steps"):
        assert a.results.get(key) == b.results.get(key), f"{key}: {a.results.get(key)!r} vs {b.results.get(key)!r}"
    wa, wb = a.run_dir / "model.safetensors", b.run_dir / "model.safetensors"
    if wa.exists() or wb.exists():
        assert_same_state(load_file(str(wa)), load_file(str(wb)), "model.safetensors")


@pytest.fixture
def run_plan(tmp_path: Path) -> Callable[..., tuple[dict[str, Any], dict[str, Any]]]:
    counter = iter(range(10_000))

    def _run(
        text: str, registry: Any = None, seed: int | None = None, **kwargs: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        directory = tmp_path / f"plan{next(counter)}"
        directory.mkdir()
        return run_plan_text(text, directory, registry, seed, **kwargs)

    return _run


# -- a tiny seeded task ----------------------------------------------------------------
def tiny_task(
    seed: int = 0, classes: int = 4, features: int = 16, train: int = 128, test: int = 64, spread: float = 0.5
) -> Any:
    """Gaussian blobs: one centre per class, ``train``/``test`` samples, fixed by ``seed``.

    Small enough that a training step takes microseconds, separable enough that
    any working optimizer reaches high accuracy. Plans name it as
    ``[task] name = "paperkit.testing:tiny_task"`` with any of these arguments.
    """
    import torch

    from paperkit.tasks.base import Experience, IndexedDataset, Task, TaskInfo

    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, features, generator=generator)

    def draw(n: int) -> tuple[Any, Any]:
        y = torch.arange(n) % classes
        x = centres[y] + spread * torch.randn(n, features, generator=generator)
        return x, y

    x_train, y_train = draw(train)
    x_test, y_test = draw(test)
    experience = Experience(
        0, IndexedDataset(x_train, y_train), IndexedDataset(x_test, y_test), tuple(range(classes)), "tiny"
    )
    return Task("tiny", TaskInfo(input_dim=features, num_classes=classes), [experience], "single")


@pytest.fixture(name="tiny_task")
def tiny_task_fixture() -> Any:
    return tiny_task()


# -- the method harness ------------------------------------------------------------------
def smoke_plan(
    key: str,
    spec: Any,
    options: dict[str, Any] | None = None,
    section: str | None = None,
    task: str = "digits",
    task_options: dict[str, Any] | None = None,
    model: str = "mlp",
    model_options: dict[str, Any] | None = None,
    plan_extra: str = "",
    **run: Any,
) -> dict[str, Any]:
    """The smallest plan that runs ``key``: raw plan data (``[run]`` overrides as keywords)."""
    from paperkit.plan import parse_toml
    from paperkit.spec import SECTION_HOOKS

    section = section or section_for(spec.hooks, getattr(spec, "section", None))
    model_defaults = SMOKE_MLP if model == "mlp" else {}
    raw: dict[str, Any] = {
        "run": {**SMOKE_RUN, **run},
        "task": {"name": task, **(task_options or {})},
        "model": {"name": model, **model_defaults, **(model_options or {})},
        section: [{"use": key, **(options or {})}],
    }
    extra = parse_toml(plan_extra, f"{key}: plan_extra") if plan_extra.strip() else {}
    for name, value in extra.items():
        if name in ("run", "task", "model") and isinstance(value, dict):
            raw[name].update(value)
        elif name in raw or name in SECTION_HOOKS:
            entries = value if isinstance(value, list) else [value]
            raw.setdefault(name, [])
            raw[name] = [*raw[name], *entries]
        else:
            raw[name] = value
    if "optimizer" not in spec.exclusive and "optimize" not in extra:
        raw.setdefault("optimize", []).append(dict(DEFAULT_OPTIMIZER))
    return raw


def section_for(hooks: tuple[str, ...], declared: str | None = None) -> str:
    """The plan section a method with these hooks belongs in (:func:`paperkit.spec.home_section`)."""
    from paperkit.spec import home_section

    return home_section(hooks, declared)


class MethodHarness:
    """One method inside a smoke plan, outside a full run: build models, call hooks, train a few steps.

    Everything the engine would give a hook is real here (the task, a
    :class:`~paperkit.context.RunContext` on an Accelerator, the plan's other
    methods), so a contract tested through the harness holds inside runs.
    """

    def __init__(self, raw: dict[str, Any], key: str, directory: Path, registry: Any = None, seed: int = 0) -> None:
        from paperkit import tomlwrite
        from paperkit.plan import build_plan
        from paperkit.registry import Registry

        self.registry = registry if registry is not None else Registry()
        self.key = key
        self.name = self.registry.get("method", key, "harness").key
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.raw = raw
        path = self.directory / "conformance.toml"
        path.write_text(tomlwrite.dumps(raw), encoding="utf-8")
        self.plan = build_plan(raw, path, registry=self.registry)
        self.seed = seed
        self.accelerator = _accelerator(self.plan)
        from paperkit.building import build_task

        self.task = build_task(self.plan)
        self.spec = self.plan_use.spec

    @property
    def plan_use(self) -> Any:
        return next(u for u in self.plan.methods if u.key == self.name)

    @property
    def device(self) -> Any:
        return self.accelerator.device

    def methods(self) -> Any:
        """Fresh instances of every method in the plan (the method under test among them)."""
        from paperkit.dispatch import Methods

        return Methods(self.plan, self.registry)

    def context(self, seed: int | None = None, experience: int = 0) -> Any:
        """A run context as the engine builds it (sample batches and evaluation included)."""
        from paperkit import engine
        from paperkit.context import RunContext
        from paperkit.references import Resolver
        from paperkit.teachers import teacher_builder

        seed = self.seed if seed is None else seed
        ctx = RunContext(self.accelerator, self.plan, seed, self.task, self.directory / f"run-s{seed}")
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        ctx.batch_sampler = lambda n: engine._sample_batches(self.task.experiences[0], self.plan, seed, self.device, n)
        ctx.evaluator = lambda m, exps: engine._evaluate_accuracy(m, self.task, exps, self.plan, ctx)
        ctx.eval_set_builder = lambda m, data, split: engine.eval_set(
            m, data, ctx.experience or self.task.experiences[0], ctx, "custom", split
        )
        ctx.experience = self.task.experiences[experience]
        ctx.weights_resolver = Resolver(self.plan, _RunsOnDemand(self.plan, seed, self.directory, self.registry))
        ctx.teacher_builder = teacher_builder(ctx, self.registry)
        return ctx

    def model(self, seed: int | None = None) -> Any:
        """A freshly built model, its default initialization drawn from ``seed``."""
        from paperkit.building import build_model
        from paperkit.engine import seed_everything

        seed_everything(self.seed if seed is None else seed, self.device)
        return build_model(self.plan, self.task).to(self.device)

    def prepare(self, methods: Any, ctx: Any, seed: int | None = None, adapt: bool = True) -> Any:
        """A model after every ``init`` (and unless ``adapt`` is false, every ``adapt``) of the plan, as a run starts."""
        from paperkit.engine import seed_everything

        model = self.model(seed)
        seed_everything(self.seed if seed is None else seed, self.device)
        methods.call("init", model=model, ctx=ctx)
        return self.adapt(model, methods, ctx) if adapt else model

    def adapt(self, model: Any, methods: Any, ctx: Any) -> Any:
        """Every ``adapt`` of the plan, chained as the engine chains them."""
        for _key, adapted in methods.call("adapt", model=model, ctx=ctx):
            model = adapted if adapted is not None else model
        return model

    def batch(self, n: int = 1, seed: int | None = None) -> Any:
        """The ``n``-th training batch the context's sampler draws (fixed per seed)."""
        return self.context(seed).sample_batches(n)[-1]

    def stepper(self, model: Any, methods: Any, ctx: Any, steps: int) -> Any:
        """The experience's optimization set up as the engine sets it up, as the engine's own
        :class:`~paperkit.step.TrainingStep` (divergence guard, gradient clipping and schedule included)."""
        from paperkit.checkpoint import StopFlag, check_loss, floating_parameters
        from paperkit.engine import training_step

        ctx.total_steps, ctx.experience_step = steps, 0
        optimization = methods.optimization(ctx.step, model=model, ctx=ctx)
        if optimization.optimizer is None:  # a gradient-free method: nothing to step
            return None
        stop, watched = StopFlag(self.accelerator), floating_parameters(model)
        step, _prepared = training_step(
            model, optimization, methods, ctx, lambda total: check_loss(total, ctx, methods, stop, model, watched)
        )
        return step

    def train(
        self, model: Any, methods: Any, ctx: Any, steps: int, experience: int = 0, finish: bool = True
    ) -> list[dict[str, Any]]:
        """Train ``steps`` optimizer steps on one experience, as the engine does: the same seeded batch order
        (:class:`~paperkit.engine.TrainBatches`) and the same step function, so that contracts can look at the
        method objects between steps.

        Returns one record per step (``loss``, each ``<key>/<term>`` and each
        ``after_step`` value). ``finish`` also calls ``after_experience``.
        :meth:`ConformanceSuite.run_smoke` runs the whole engine instead.
        """
        from paperkit.engine import TrainBatches

        exp = self.task.experiences[experience]
        ctx.experience = exp
        loader = TrainBatches(exp.train, self.plan, ctx.seed, exp.index, self.accelerator)
        ctx.train_loader, ctx.steps_per_epoch = loader, len(loader)
        step = self.stepper(model, methods, ctx, steps)
        wants = [r for _k, r in methods.call("before_experience", model=model, experience=exp, ctx=ctx, step=ctx.step)]
        records: list[dict[str, Any]] = []
        if step is not None and False not in wants:
            model.train()
            for epoch, batch, share in loader.steps(0, steps):
                ctx.epoch = epoch
                done = step(model, batch, share)
                records.append(
                    {
                        "step": ctx.step,
                        "loss": done.loss.item(),
                        **{k: v.item() for k, v in done.terms.items()},
                        **done.observed,
                    }
                )
        if finish:
            methods.call("after_experience", model=model, experience=exp, ctx=ctx, step=ctx.step)
        return records

    def eval_set(self, model: Any, ctx: Any, experience: int = 0, phase: str = "experience_end") -> Any:
        """The evaluation set the engine hands ``evaluate`` for one experience."""
        from paperkit import engine

        exp = self.task.experiences[experience]
        return engine.eval_set(model, exp.test, exp, ctx, phase, "test")


def _accelerator(plan: Any) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    return Accelerator(cpu=plan.run.cpu, dataloader_config=DataLoaderConfiguration(split_batches=True))


def checkpoint_round_trip(state: Any) -> Any:
    """``state`` after a trip through a real checkpoint file (the codec runs use: safetensors plus a JSON header)."""
    from paperkit.checkpoint import round_trip
    from paperkit.errors import CheckpointError

    try:
        return round_trip(state)
    except CheckpointError as exc:
        raise AssertionError(
            "state_dict() holds something a checkpoint cannot store (keep to tensors, arrays, numbers, strings, "
            f"lists, tuples and dicts with scalar keys): {str(exc).splitlines()[0]}"
        ) from None


def assert_same_state(a: Any, b: Any, where: str = "state") -> None:
    """Two state dicts are equal, tensor for tensor (bit for bit)."""
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), f"{where}: tensor vs {type(b).__name__}"
        assert a.shape == b.shape and a.dtype == b.dtype, f"{where}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
        assert torch.equal(a.cpu(), b.cpu()), f"{where}: values differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (
            f"{where}: keys differ: {sorted(map(str, a))} vs {sorted(map(str, b)) if isinstance(b, dict) else b}"
        )
        for k in a:
            assert_same_state(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"{where}: nan vs {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _logits(model: Any, x: Any) -> Any:
    import torch

    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train(was)
    return out[0] if isinstance(out, tuple) else out


def _close(a: Any, b: Any, what: str) -> None:
    import torch

    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=lambda m: f"{what}: {m}")


# -- the conformance suite -------------------------------------------------------------------
def contract(*hooks: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a conformance test with the hooks whose contract it checks (docs and CI read this)."""

    def mark(function: Callable[..., Any]) -> Callable[..., Any]:
        function.paperkit_hooks = hooks  # type: ignore[attr-defined]
        return function

    return mark


def contracts() -> dict[str, list[str]]:
    """``{hook: [conformance test names]}`` for every hook a contract covers."""
    out: dict[str, list[str]] = {}
    for name, value in vars(ConformanceSuite).items():
        for hook in getattr(value, "paperkit_hooks", ()):
            out.setdefault(hook, []).append(name)
    return out


class ConformanceSuite:
    """Every contract of every hook, for the method ``key``; subclass it in a plugin's tests.

    Each test checks one contract, builds what it needs from a smoke plan (the
    method on ``task`` with ``model`` and a small budget) and skips itself when
    the method does not implement the hook. The docstring of each test states
    its contract; ``docs/hooks.md`` lists them per hook.
    """

    key: str = ""
    options: dict[str, Any] = {}
    plan_extra: str = ""
    task: str = "digits"
    task_options: dict[str, Any] = {}
    model: str = "mlp"
    model_options: dict[str, Any] = {}
    section: str | None = None

    # -- helpers (not tests) -----------------------------------------------------------------
    def registry(self) -> Any:
        """Where the method is found: installed entry points (one discovery per test)."""
        if "_registry" not in self.__dict__:
            from paperkit.registry import Registry

            self._registry = Registry()
        return self._registry

    def method_spec(self) -> Any:
        assert self.key, f"{type(self).__name__}: set the class attribute key = '<method key>'"
        return self.registry().get("method", self.key, f"{type(self).__name__}.key")

    @property
    def name(self) -> str:
        """The method's own key: what metrics are namespaced by (``key`` may be a ``module:attr`` path)."""
        return self.method_spec().key

    def require(self, *hooks: str) -> Any:
        """The method's record; skips the test unless it implements one of ``hooks``."""
        spec = self.method_spec()
        if not set(hooks) & set(spec.hooks):
            pytest.skip(f"'{self.key}' does not implement {' or '.join(hooks)}")
        return spec

    def raw_plan(self, stream: bool = False, **run: Any) -> dict[str, Any]:
        """The smoke plan as raw data; ``stream`` swaps in a 5-experience stream."""
        task, task_options = self.task, dict(self.task_options)
        if stream:
            if task not in STREAM_TASKS:
                task, task_options = "split-digits", {}
            task_options["experiences"] = STREAM_EXPERIENCES
        return smoke_plan(
            self.key,
            self.method_spec(),
            dict(self.options),
            self.section,
            task,
            task_options,
            self.model,
            dict(self.model_options),
            self.plan_extra,
            **run,
        )

    def harness(self, directory: Path, stream: bool = False, **run: Any) -> MethodHarness:
        return MethodHarness(self.raw_plan(stream, **run), self.key, directory, self.registry())

    def run_smoke(self, directory: Path, stream: bool = False, **run: Any) -> tuple[dict[str, Any], Path]:
        """Run the smoke plan through the engine; ``(results, run directory)``."""
        from paperkit import tomlwrite

        result = _run_text(tomlwrite.dumps(self.raw_plan(stream, **run)), directory, self.registry())
        return result.results, result.run_dir

    # -- every method ----------------------------------------------------------------------
    @contract()
    def test_record_is_discovered(self) -> None:
        """The key is installed through a ``paperkit.methods`` entry point and its record is valid."""
        from paperkit.registry import Registry

        if ":" in self.key:
            pytest.skip(f"'{self.key}' is named by import path, not installed")
        registry = Registry()
        assert self.key in registry.names("method"), f"'{self.key}' is not installed (pip install -e the plugin)"
        record = registry.record("method", self.key)
        assert record.ok, f"'{self.key}' is {record.status}: {record.error}"

    @contract()
    def test_implementation_is_valid(self) -> None:
        """The implementation imports, implements exactly the declared hooks, and constructs from the default config."""
        spec = self.method_spec()
        registry = self.registry()
        impl = registry.implementation(spec)
        config = spec.config(**self.options) if spec.config is not None else None
        impl(config)

    @contract()
    def test_record_module_does_not_import_torch(self) -> None:
        """Listing plugins stays fast: the module holding the record imports no torch."""
        from paperkit.registry import Registry

        registry = Registry()
        if self.key not in registry.names("method"):
            pytest.skip(f"'{self.key}' is not installed through an entry point")
        module = registry.record("method", self.key).target.partition(":")[0]
        code = (
            f"import sys, importlib; importlib.import_module({module!r}); sys.exit(3 if 'torch' in sys.modules else 0)"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode != 3, f"importing {module} imports torch; move torch imports into functional.py/hooks.py"
        assert done.returncode == 0, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "import failed"

    @contract()
    def test_config_fields_have_help_and_defaults(self) -> None:
        """Every config field has help text and a default, so a plan may leave it out."""
        import attrs

        spec = self.method_spec()
        if spec.config is None:
            pytest.skip(f"'{self.key}' has no config")
        for field in attrs.fields(spec.config):
            assert field.metadata.get("help"), (
                f"config field '{field.name}' has no help (use paperkit.option(..., help=...))"
            )
            assert field.default is not attrs.NOTHING, f"config field '{field.name}' has no default"

    @contract()
    def test_smoke_plan_runs(self, tmp_path: Path) -> None:
        """The method runs inside the engine on the smoke plan and the run completes with finite metrics."""
        results, _ = self.run_smoke(tmp_path)
        assert results["status"] == "completed"
        for name, value in results["final"].items():
            assert math.isfinite(value), f"final metric {name} is {value}"

    @contract()
    def test_interrupt_and_resume_is_bit_exact(self, tmp_path: Path) -> None:
        """Ctrl-C after step 3 of the smoke plan and ``--resume`` end exactly like the uninterrupted run:
        the same metrics and bit-identical weights (method state and ``ctx.generator`` draws included)."""
        from paperkit import tomlwrite

        raw = self.raw_plan(save_model=True)
        if not raw["run"].get("train", True):
            pytest.skip("the smoke plan does not train")
        path = tmp_path / "plan.toml"
        path.write_text(tomlwrite.dumps(raw), encoding="utf-8")
        reference, resumed = interrupt_and_resume(path, tmp_path, at_step=3, registry=self.registry())
        assert reference.results["steps"] > 3, "the smoke plan must run more than 3 steps"
        assert_same_run(reference, resumed)

    @contract("continual_step", "before_experience", "after_experience")
    def test_interrupt_between_experiences_and_resume_is_bit_exact(self, tmp_path: Path) -> None:
        """Ctrl-C at the boundary after the second experience of a 5-experience stream (the checkpoint between
        experiences) and ``--resume`` end exactly like the uninterrupted run: accuracy matrix and weights."""
        from paperkit import tomlwrite

        self.require("continual_step", "before_experience", "after_experience")
        path = tmp_path / "plan.toml"
        path.write_text(tomlwrite.dumps(self.raw_plan(stream=True, save_model=True)), encoding="utf-8")
        reference, resumed = interrupt_and_resume(path, tmp_path, after_experience=1, registry=self.registry())
        assert_same_run(reference, resumed)

    @contract()
    def test_claim_plans_load(self) -> None:
        """Every claim plan ships with the package, loads (quick overrides too) and defines the claim's two arms.

        Several claims may share one plan (three arms, two comparisons): verification runs the claim's
        two arms and compares them, whatever the plan's ``[study] baseline`` says."""
        from paperkit.plan import load_plan
        from paperkit.verify import claim_plan_path

        spec = self.method_spec()
        if not spec.claims:
            pytest.skip(f"'{self.key}' declares no claims")
        for claim in spec.claims:
            with claim_plan_path(claim.plan, f"claim {claim.id}") as path:
                for overrides in ((), tuple(claim.quick)):
                    plan = load_plan(path, list(overrides), registry=self.registry())
                    for arm in (claim.variant, claim.baseline):
                        assert arm in plan.variants, f"claim {claim.id}: variant '{arm}' not in {list(plan.variants)}"

    # -- init --------------------------------------------------------------------------------
    def _initialized(self, h: MethodHarness, seed: int) -> Any:
        """The model after every ``init`` of the plan and before any ``adapt`` (an adapter in the plan wraps layers,
        which is not the init's doing)."""
        methods = h.methods()
        return h.prepare(methods, h.context(seed), seed, adapt=False)

    @contract("init")
    def test_init_is_deterministic_per_seed(self, tmp_path: Path) -> None:
        """Two runs with the same seed start from bit-identical weights."""
        self.require("init")
        h = self.harness(tmp_path)
        a, b = self._initialized(h, 0), self._initialized(h, 0)
        assert_same_state(a.state_dict(), b.state_dict(), "weights after init")

    @contract("init")
    def test_init_keeps_shapes_and_dtypes(self, tmp_path: Path) -> None:
        """Init changes values only: every parameter and buffer keeps its name, shape, dtype and device."""
        self.require("init")
        h = self.harness(tmp_path)
        before = {k: (v.shape, v.dtype, v.device) for k, v in h.model(0).state_dict().items()}
        after = {k: (v.shape, v.dtype, v.device) for k, v in self._initialized(h, 0).state_dict().items()}
        assert before == after

    @contract("init")
    def test_init_is_finite(self, tmp_path: Path) -> None:
        """Every weight after init is finite, and so is the model's output."""
        import torch

        self.require("init")
        h = self.harness(tmp_path)
        model = self._initialized(h, 0)
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                assert torch.isfinite(value).all(), f"{name} has non-finite values after init"
        assert torch.isfinite(_logits(model, h.batch()["x"])).all()

    # -- adapt -------------------------------------------------------------------------------
    def _adapted(self, h: MethodHarness, seed: int = 0, steps: int = 0) -> tuple[Any, Any, Any]:
        methods, ctx = h.methods(), h.context(seed)
        model = h.prepare(methods, ctx, seed)
        if steps:
            h.train(model, methods, ctx, steps)
        return model, methods, ctx

    @contract("adapt")
    def test_adapt_preserves_output_at_start(self, tmp_path: Path) -> None:
        """Where the method promises it (``preserves_output = True``), the adapted model computes what the base model computed."""
        self.require("adapt")
        h = self.harness(tmp_path)
        methods, ctx = h.methods(), h.context(0)
        if not getattr(methods.instances[self.name], "preserves_output", False):
            pytest.skip(f"'{self.key}' does not promise to preserve the output (preserves_output)")
        base = h.prepare(methods, ctx, 0, adapt=False)  # after the plan's init: what adapt receives
        x = h.batch()["x"]
        expected = _logits(base, x)
        adapted = h.adapt(base, methods, ctx)
        _close(_logits(adapted, x), expected, "adapted output at start vs base output")

    @contract("adapt")
    def test_adapt_merged_equals_unmerged(self, tmp_path: Path) -> None:
        """After training, ``merge(model)`` computes what the adapted model computes; ``unmerge`` restores it."""
        self.require("adapt")
        h = self.harness(tmp_path)
        model, methods, _ = self._adapted(h, steps=3)
        instance = methods.instances[self.name]
        if not hasattr(instance, "merge"):
            pytest.skip(f"'{self.key}' offers no merge(model)")
        x = h.batch()["x"]
        expected = _logits(model, x)
        merged = instance.merge(model)
        merged = model if merged is None else merged
        _close(_logits(merged, x), expected, "merged vs unmerged output")
        if hasattr(instance, "unmerge"):
            restored = instance.unmerge(merged)
            restored = merged if restored is None else restored
            _close(_logits(restored, x), expected, "unmerged-after-merge vs adapted output")

    @contract("adapt")
    def test_adapt_trains_only_declared_parameters(self, tmp_path: Path) -> None:
        """Only the adapter's parameters train: frozen ones get no gradient and keep their values; trainable ones move."""
        import torch

        self.require("adapt")
        h = self.harness(tmp_path)
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        instance = methods.instances[self.name]
        if hasattr(instance, "adapter_parameters"):
            declared = set(instance.adapter_parameters(model))
            assert trainable == declared, (
                f"trainable parameters {sorted(trainable - declared)} are not declared; "
                f"declared {sorted(declared - trainable)} do not train"
            )
        assert trainable, "adapt left no trainable parameter"
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        h.train(model, methods, ctx, 3)
        for name, p in model.named_parameters():
            if name in trainable:
                continue
            assert p.grad is None, f"frozen parameter {name} received a gradient"
            assert torch.equal(p.detach(), before[name]), f"frozen parameter {name} changed"
        moved = [n for n, p in model.named_parameters() if n in trainable and not torch.equal(p.detach(), before[n])]
        assert moved, "no trainable parameter changed in 3 steps (does the gradient reach the adapter?)"

    @contract("adapt")
    def test_adapt_save_load_round_trip(self, tmp_path: Path) -> None:
        """A trained adapted model saved to safetensors and loaded into a freshly adapted model computes the same output."""
        from paperkit.weights import load_weights, save_weights

        self.require("adapt")
        h = self.harness(tmp_path)
        model, methods, _ = self._adapted(h, seed=0, steps=3)
        path = tmp_path / "adapted.safetensors"
        save_weights(model, path)
        other, other_methods, _ = self._adapted(h, seed=1)
        load_weights(other, path)
        x = h.batch()["x"]
        _close(_logits(other, x), _logits(model, x), "reloaded vs saved adapted model")
        instance = methods.instances[self.name]
        if hasattr(instance, "state_dict"):
            other_methods.instances[self.name].load_state_dict(checkpoint_round_trip(instance.state_dict()))
            assert_same_state(other_methods.instances[self.name].state_dict(), instance.state_dict(), "method state")

    # -- grow --------------------------------------------------------------------------------
    def _growths(self, tmp_path: Path) -> tuple[Path, list[dict[str, Any]], Path]:
        from paperkit import tomlwrite

        path = tmp_path / "plan.toml"
        path.write_text(tomlwrite.dumps(self.raw_plan(save_model=True)), encoding="utf-8")
        results, run_dir = self.run_smoke(tmp_path / "plain", save_model=True)
        assert results["status"] == "completed"
        grown = [r for r in _records(run_dir) if r.get("event") == "grow"]
        assert grown, (
            f"'{self.name}' never grew the model in the smoke plan's {results['steps']} steps; "
            "set the suite's options so that it grows early"
        )
        return path, grown, run_dir

    @contract("grow")
    def test_grow_is_logged_and_trains_on(self, tmp_path: Path) -> None:
        """A growth within the smoke plan is logged (method, step, parameter count) and training continues on
        the grown model: the run completes with finite metrics and saves weights of the grown shapes."""
        from paperkit.weights import read_weights

        self.require("grow")
        _path, grown, run_dir = self._growths(tmp_path)
        assert all(r["method"] == self.name and r["parameters"] > 0 for r in grown)
        saved = sum(t.numel() for t in read_weights(run_dir / "model.safetensors").values())
        assert saved == grown[-1]["parameters"], (
            f"the saved model has {saved} values, the last growth logged {grown[-1]['parameters']}"
        )

    @contract("grow")
    def test_grow_then_interrupt_and_resume_is_bit_exact(self, tmp_path: Path) -> None:
        """Ctrl-C one step after the first growth and ``--resume`` (which grows a fresh model again before loading
        the checkpoint) end exactly like the uninterrupted run."""
        self.require("grow")
        path, grown, _run_dir = self._growths(tmp_path)
        at = grown[0]["step"] + 1
        reference, resumed = interrupt_and_resume(path, tmp_path, at_step=at, registry=self.registry())
        assert reference.results["steps"] > at, f"the smoke plan must run past step {at}"
        assert_same_run(reference, resumed)

    # -- optimize ----------------------------------------------------------------------------
    def _optimization(self, h: MethodHarness, model: Any, methods: Any, ctx: Any, steps: int) -> Any:
        step = h.stepper(model, methods, ctx, steps)
        assert step is not None, "no optimizer in the smoke plan (set plan_extra)"
        return step

    def _step(self, model: Any, batch: Any, step: Any) -> float:
        return step(model, dict(batch)).loss.item()

    @contract("optimize")
    def test_optimize_loss_falls_on_toy_problem(self, tmp_path: Path) -> None:
        """With its default settings the method lowers the loss of one fixed batch within 40 steps."""
        self.require("optimize")
        h = self.harness(tmp_path)
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        batch = h.batch()
        steps = 40
        step = self._optimization(h, model, methods, ctx, steps)
        losses = [self._step(model, batch, step) for _ in range(steps)]
        assert all(math.isfinite(v) for v in losses), f"non-finite loss: {losses}"
        first, last = losses[0], sum(losses[-5:]) / 5
        assert last < 0.9 * first, f"loss did not fall: {first:.4f} -> {last:.4f}"

    @contract("optimize")
    def test_optimize_state_dict_round_trip(self, tmp_path: Path) -> None:
        """Optimizer (and method) state restored from a checkpoint continues exactly as the original."""
        import torch

        self.require("optimize")
        h = self.harness(tmp_path)
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        batches = h.context(0).sample_batches(4)
        step = self._optimization(h, model, methods, ctx, 10)
        for batch in batches[:3]:
            self._step(model, batch, step)
        clone = copy.deepcopy(model)
        methods2, ctx2 = h.methods(), h.context(0)
        step2 = self._optimization(h, clone, methods2, ctx2, 10)
        step2.optimizer.load_state_dict(checkpoint_round_trip(step.optimizer.state_dict()))
        if step.scheduler is not None:
            step2.scheduler.load_state_dict(checkpoint_round_trip(step.scheduler.state_dict()))
        instance = methods.instances[self.name]
        if hasattr(instance, "state_dict"):
            methods2.instances[self.name].load_state_dict(checkpoint_round_trip(instance.state_dict()))
        ctx2.load_generator_state(checkpoint_round_trip(ctx.generator_state()))
        ctx2.step, ctx2.experience_step = ctx.step, ctx.experience_step
        self._step(model, batches[3], step)
        self._step(clone, batches[3], step2)
        for (name, a), b in zip(model.state_dict().items(), clone.state_dict().values()):
            assert torch.equal(a, b), f"{name} differs after a step from restored state"

    @contract("optimize")
    def test_optimize_works_inside_the_engine(self, tmp_path: Path) -> None:
        """The engine trains with the method's optimization and every logged loss is finite."""
        self.require("optimize")
        results, run_dir = self.run_smoke(tmp_path)
        assert results["status"] == "completed" and results["steps"] > 0, (
            f"status {results['status']}, {results.get('steps')} steps"
        )
        losses = [r["loss"] for r in _records(run_dir) if "loss" in r]
        assert losses and all(math.isfinite(v) for v in losses)

    # -- regularize and loss -------------------------------------------------------------------
    def _terms_after_steps(self, h: MethodHarness, tmp_path: Path) -> tuple[Any, Any, dict[str, Any]]:
        from paperkit import engine

        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        h.train(model, methods, ctx, 3, finish=False)
        batch = h.batch(2)
        model.train()
        outputs = engine.forward(model, batch["x"], ctx)
        terms = methods.call_one(self.name, "regularize", ctx.step, model=model, batch=batch, outputs=outputs, ctx=ctx)
        return model, batch, dict(terms or {})

    @contract("regularize")
    def test_regularize_gradients_flow(self, tmp_path: Path) -> None:
        """Every term is a finite scalar tensor, and their sum sends a finite, non-zero gradient to the model."""
        import torch

        self.require("regularize")
        h = self.harness(tmp_path)
        model, _, terms = self._terms_after_steps(h, tmp_path)
        assert terms, f"'{self.key}' returned no terms after 3 training steps"
        for name, value in terms.items():
            assert isinstance(name, str) and name and "/" not in name, (
                f"term name {name!r} must be a plain non-empty string"
            )
            assert isinstance(value, torch.Tensor) and value.dim() == 0, f"term {name} must be a scalar tensor"
            assert torch.isfinite(value), f"term {name} is {value.item()}"
        model.zero_grad(set_to_none=True)
        total = sum(terms.values())
        assert total.requires_grad, "no term depends on the model's parameters"
        total.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), "gradients are missing or non-finite"
        assert any(g.abs().sum() > 0 for g in grads), "the terms' gradient is zero everywhere"

    @contract("regularize")
    def test_regularize_terms_logged_by_name(self, tmp_path: Path) -> None:
        """Inside a run, each term is logged every step as ``<key>/<term>`` in metrics.jsonl."""
        self.require("regularize")
        h = self.harness(tmp_path / "direct")
        _, _, terms = self._terms_after_steps(h, tmp_path)
        _, run_dir = self.run_smoke(tmp_path / "run")
        logged = {name for record in _records(run_dir) for name in record}
        missing = [f"{self.name}/{t}" for t in terms if f"{self.name}/{t}" not in logged]
        assert not missing, f"terms not logged: {missing}"

    @contract("loss")
    def test_loss_is_a_differentiable_scalar(self, tmp_path: Path) -> None:
        """The replacement loss is a finite scalar tensor whose gradient reaches the model."""
        import torch

        from paperkit import engine

        self.require("loss")
        h = self.harness(tmp_path)
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        batch = h.batch()
        outputs = engine.forward(model, batch["x"], ctx)
        value = methods.call_one(self.name, "loss", 0, model=model, batch=batch, outputs=outputs, ctx=ctx)
        assert isinstance(value, torch.Tensor) and value.dim() == 0 and torch.isfinite(value)
        value.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    @contract("loss")
    def test_loss_honours_the_batch_keys_it_declares(self, tmp_path: Path) -> None:
        """A loss declaring ``honours = ("target", ...)`` reads soft targets (one-hot targets give the label loss,
        other targets another loss); one declaring ``"weight"`` computes ``mean(weight * per-sample loss)``."""
        import torch

        spec = self.require("loss")
        if not spec.honours:
            pytest.skip(f"'{self.key}' declares no honours")
        from paperkit.step import forward

        h = self.harness(tmp_path)
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        batch = h.batch()
        outputs = forward(model, batch["x"], ctx)

        instance = methods.instances[self.name]
        before = copy.deepcopy(instance.__dict__)  # each call from the same state: a loss may keep statistics

        def loss(**extra: Any) -> Any:
            instance.__dict__.update(copy.deepcopy(before))
            return methods.call_one(
                self.name, "loss", 0, model=model, batch={**batch, **extra}, outputs=outputs, ctx=ctx
            ).detach()

        plain = loss()
        classes = outputs.logits.shape[-1]
        if "target" in spec.honours:
            labels = batch["y"]  # multi-hot already on multi-label tasks: the labels as targets
            one_hot = (
                labels.to(outputs.logits.dtype)
                if labels.is_floating_point()
                else torch.nn.functional.one_hot(labels, classes).to(outputs.logits.dtype)
            )
            _close(loss(target=one_hot), plain, "loss with one-hot soft targets vs loss with labels")
            uniform = torch.full_like(one_hot, 1.0 / classes)
            assert not torch.allclose(loss(target=uniform), plain), (
                "uniform soft targets leave the loss unchanged: 'target' is ignored"
            )
        if "weight" in spec.honours:
            ones = torch.ones(len(batch["y"]), device=batch["y"].device)
            _close(loss(weight=ones), plain, "loss with unit weights vs loss without")
            _close(loss(weight=2 * ones), 2 * plain, "loss with weights 2 vs twice the loss")
            half = ones.clone()
            half[: len(half) // 2] = 0.0
            assert not torch.allclose(loss(weight=half), plain), (
                "zero weights on half the batch leave the loss unchanged"
            )

    # -- evaluate, after_step, after_run ---------------------------------------------------------------
    @contract("evaluate")
    def test_evaluate_metrics_are_plain_numbers(self, tmp_path: Path) -> None:
        """``evaluate`` returns ``{name: float}`` with plain finite numbers (no tensors), before and after training."""
        self.require("evaluate")
        h = self.harness(tmp_path)
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        for phase in ("initial", "experience_end"):
            if phase == "experience_end":
                h.train(model, methods, ctx, 3)
            out = methods.call_one(
                self.name, "evaluate", ctx.step, model=model, data=h.eval_set(model, ctx, phase=phase), ctx=ctx
            )
            _assert_numbers(out, f"evaluate ({phase})")

    @contract("evaluate")
    def test_evaluate_is_correct_under_several_processes(self, tmp_path: Path) -> None:
        """Metrics from 2 processes (torchrun, gloo) equal the single-process metrics."""
        self.require("evaluate")
        from paperkit import tomlwrite

        raw = self.raw_plan(train=False)
        single, _ = self.run_smoke(tmp_path / "single", train=False)
        plan = tmp_path / "multi" / "plan.toml"
        plan.parent.mkdir()
        plan.write_text(tomlwrite.dumps(raw), encoding="utf-8")
        multi = run_distributed(plan, tmp_path / "multi" / "runs", processes=2)
        ours = {k: v for k, v in single["final"].items() if k.startswith(f"{self.name}/")}
        assert ours, f"no '{self.name}/...' metric in the single-process results"
        for name, value in ours.items():
            assert name in multi["final"], f"{name} missing from the 2-process results"
            assert math.isclose(multi["final"][name], value, rel_tol=1e-5, abs_tol=1e-6), (
                f"{name}: {value} on 1 process, {multi['final'][name]} on 2"
            )

    @contract("after_step")
    def test_after_step_logs_numbers(self, tmp_path: Path) -> None:
        """What ``after_step`` returns is plain numbers, logged as ``<key>/<name>`` in metrics.jsonl."""
        self.require("after_step")
        h = self.harness(tmp_path / "direct")
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        records = h.train(model, methods, ctx, 3, finish=False)
        names = {n for r in records for n in r if n.startswith(f"{self.name}/")}
        for record in records:
            _assert_numbers({k: v for k, v in record.items() if k in names}, "after_step")
        from paperkit.step import forward

        batch = h.batch()
        out = methods.call_one(
            self.name,
            "after_step",
            ctx.step,
            model=model,
            batch=batch,
            outputs=forward(model, batch["x"], ctx),
            ctx=ctx,
        )
        _assert_numbers(out, "after_step")

    @contract("after_run")
    def test_after_run_summary_is_json(self, tmp_path: Path) -> None:
        """The run summary lands in results.json under ``summary.<key>`` as plain JSON data."""
        self.require("after_run")
        results, _ = self.run_smoke(tmp_path)
        summary = results["summary"].get(self.name)
        if summary is not None:
            json.dumps(summary, allow_nan=False)

    # -- continual ---------------------------------------------------------------------------
    @contract("continual_step", "before_experience", "after_experience")
    def test_continual_runs_over_a_five_experience_stream(self, tmp_path: Path) -> None:
        """The method runs over a 5-experience stream; the accuracy matrix is complete and finite."""
        self.require("continual_step", "before_experience", "after_experience")
        results, _ = self.run_smoke(tmp_path, stream=True)
        assert results["status"] == "completed"
        R = results["accuracy_matrix"]
        assert len(R) == STREAM_EXPERIENCES and all(len(row) == STREAM_EXPERIENCES for row in R)
        assert all(math.isfinite(v) for row in R for v in row)

    @contract("continual_step")
    def test_continual_step_returns_a_batch(self, tmp_path: Path) -> None:
        """``continual_step`` returns None or a batch dict whose ``x``, ``y`` and ``index`` agree in length."""
        self.require("continual_step")
        h = self.harness(tmp_path, stream=True)
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        h.train(model, methods, ctx, 3, experience=0)
        ctx.experience = h.task.experiences[1]
        batch = h.batch()
        out = methods.call_one(self.name, "continual_step", ctx.step, batch=dict(batch), model=model, ctx=ctx)
        if out is None:
            return
        assert {"x", "y", "index"} <= set(out), f"batch keys {sorted(out)} lack x, y or index"
        assert len(out["x"]) == len(out["y"]) == len(out["index"]), "x, y and index differ in length"

    @contract("continual_step")
    def test_continual_step_keeps_keys_it_did_not_create(self, tmp_path: Path) -> None:
        """A batch transform keeps every batch key it did not create, row for row with the samples it returns."""
        import torch

        spec = self.require("continual_step")
        h = self.harness(tmp_path, stream=True)
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        for step, batch in enumerate(h.context(0).sample_batches(3), start=1):
            batch = dict(batch)
            batch["probe"] = batch["index"].double() * 2 + 1  # a key another method added: a function of the sample
            out = methods.call_one(self.name, "continual_step", step, batch=dict(batch), model=model, ctx=ctx)
            out = batch if out is None else out
            assert "probe" in out, f"step {step}: the batch transform dropped the key 'probe' it did not create"
            assert len(out["probe"]) == len(out["y"]), (
                f"step {step}: 'probe' has {len(out['probe'])} rows, the batch {len(out['y'])}"
            )
            if "index" not in spec.batch_keys:
                assert torch.equal(out["probe"], out["index"].double() * 2 + 1), (
                    f"step {step}: 'probe' rows no longer match their samples"
                )
            if "after_step" in spec.hooks:
                from paperkit.step import forward

                methods.call_one(
                    self.name,
                    "after_step",
                    step,
                    model=model,
                    batch=out,
                    outputs=forward(model, out["x"], ctx),
                    ctx=ctx,
                )

    @contract("continual_step", "before_experience", "after_experience")
    def test_continual_state_saved_and_restored(self, tmp_path: Path) -> None:
        """After two experiences, the method's state survives a checkpoint and a restored method acts identically."""
        import torch

        self.require("continual_step", "before_experience", "after_experience")
        h = self.harness(tmp_path, stream=True)
        methods, ctx = h.methods(), h.context(0)
        model = h.prepare(methods, ctx, 0)
        for index in range(2):
            h.train(model, methods, ctx, 3, experience=index)
        instance = methods.instances[self.name]
        fresh = h.methods()
        restored = fresh.instances[self.name]
        if hasattr(instance, "state_dict"):
            assert hasattr(restored, "load_state_dict"), "state_dict() without load_state_dict()"
            restored.load_state_dict(checkpoint_round_trip(instance.state_dict()))
            assert_same_state(restored.state_dict(), instance.state_dict(), "restored method state")
        if "continual_step" not in self.method_spec().hooks:
            return
        ctx.experience = h.task.experiences[2]
        batch = h.batch()
        outs, generators = [], checkpoint_round_trip(ctx.generator_state())  # ctx.generator draws are run state too
        for methods_ in (methods, fresh):
            ctx.load_generator_state(generators)
            torch.manual_seed(1234)
            outs.append(
                methods_.call_one(self.name, "continual_step", ctx.step, batch=dict(batch), model=model, ctx=ctx)
            )
        a, b = (batch if o is None else o for o in outs)
        hint = "" if hasattr(instance, "state_dict") else " (the method keeps state but offers no state_dict())"
        assert set(a) == set(b), f"restored method returns different batch keys{hint}"
        for k in a:
            assert torch.equal(a[k], b[k]), f"restored method returns a different '{k}'{hint}"


def _assert_numbers(out: Any, what: str) -> None:
    if out is None:
        return
    assert hasattr(out, "items"), f"{what} must return a mapping, got {type(out).__name__}"
    for name, value in out.items():
        assert isinstance(name, str) and name, f"{what}: metric name {name!r}"
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (
            f"{what}: metric {name} is {type(value).__name__}; return a plain number (use .item())"
        )
        assert math.isfinite(value), f"{what}: metric {name} is {value}"


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def run_distributed(
    plan: Path, output: Path, processes: int = 2, timeout: float = 300, attempts: int = 2, variant: str | None = None
) -> dict[str, Any]:
    """Run ``plan`` (first seed; its ``variant``, default the plan itself) on ``processes`` CPU processes with
    torchrun (gloo); its results.json (the variant's own, when a reference ran another variant first).

    A launch that dies is tried once more: gloo on a loaded machine can lose a
    connection, and a real fault in the method fails every attempt anyway.
    """
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
        "CUDA_VISIBLE_DEVICES": "",
        "ACCELERATE_USE_CPU": "1",
    }
    failures = []
    for attempt in range(attempts):
        target = Path(output) / f"attempt{attempt}"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            "-m",
            "paperkit.cli",
            "--traceback",
            "run",
            str(plan),
            "--output",
            str(target),
            "--quiet",
            *(["--variant", variant] if variant else []),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        if done.returncode == 0:
            break
        failures.append(_launch_failure(done.stdout + done.stderr))
    else:
        raise AssertionError(f"{processes}-process run failed {attempts} times:\n" + "\n---\n".join(failures))
    found = sorted(target.glob("*/results.json"))
    if variant:  # a reference runs its variant beside this one: keep this variant's run
        found = [f for f in found if json.loads((f.parent / "manifest.json").read_text()).get("variant") == variant]
    assert len(found) == 1, f"expected one run directory under {target}, found {len(found)}"
    results = json.loads(found[0].read_text())
    manifest = json.loads((found[0].parent / "manifest.json").read_text())
    assert manifest["num_processes"] == processes, f"ran on {manifest['num_processes']} process(es), not {processes}"
    return results


def _launch_failure(output: str) -> str:
    """The lines that say why a launch failed: errors first, then the end of the output."""
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if any(w in line for w in ("Error", "error:", "terminate", "Traceback", "what()"))]
    return "\n".join([*errors[:20], *lines[-10:]])


def iter_contracts() -> Iterator[tuple[str, str, str]]:
    """``(hook, test name, contract)`` for every hook-specific contract (the docs' hook reference)."""
    import inspect

    for name, value in vars(ConformanceSuite).items():
        for hook in getattr(value, "paperkit_hooks", ()):
            yield hook, name, (inspect.getdoc(value) or "").splitlines()[0]


class _RunsOnDemand(dict[str, Path]):
    """The weights a harness's references name, made (in the harness's directory) the first time one is asked
    for, as the executor makes them before a run: a harness that uses no reference trains nothing more."""

    def __init__(self, plan: Any, seed: int, directory: Path, registry: Any) -> None:
        super().__init__()
        self.plan, self.seed, self.directory, self.registry = plan, seed, directory, registry
        self.made = False

    def get(self, key: Any, default: Any = None) -> Any:
        if not self.made:
            from paperkit.executor import references_for

            self.made = True
            self.update(references_for(self.plan, self.seed, self.directory, self.registry))
        return super().get(key, default)
