"""The method harness: a tiny seeded task, the smoke plan a method is checked on, and a run context as the engine builds it."""

from __future__ import annotations

import math
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
