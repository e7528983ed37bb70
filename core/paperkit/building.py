"""Building what a plan names: its task (with the core's ``[task]`` options) and its model (with its weights).

The engine builds a run's task and model here, and so do the methods that need
a second model of a plan (a teacher from another variant, a fresh peer
network): one place where a factory's mistakes become one-line plan errors.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from paperkit.errors import CheckpointError, PlanError
from paperkit.plan import Plan
from paperkit.references import is_reference, resolve_path
from paperkit.spec import resolve
from paperkit.tasks.base import Task, apply_task_options


def build_task(plan: Plan) -> Task:
    """The plan's task, with the core's ``[task]`` options (label noise, validation split) applied."""
    factory = resolve(plan.task.spec.factory)
    try:
        task = factory(plan.task.config) if plan.task.config is not None else factory(**plan.task.options)
    except (ValueError, TypeError) as exc:
        raise PlanError(str(exc).splitlines()[0], f"{plan.path}: [task]") from None
    except (MemoryError, RuntimeError) as exc:
        raise PlanError(
            f"cannot build the task: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'out of memory'}",
            f"{plan.path}: [task]",
        ) from None
    if not isinstance(task, Task):
        raise PlanError(
            f"the task factory returned {type(task).__name__}, not a paperkit Task", f"{plan.path}: [task] name"
        )
    try:
        return apply_task_options(task, plan.task.core, plan.task.kind)
    except ValueError as exc:
        raise PlanError(str(exc).splitlines()[0], f"{plan.path}: [task] label_noise_type") from None


def build_model(plan: Plan, task: Task, init_from: Path | None = None) -> nn.Module:
    """The plan's model, loaded from ``init_from`` (default: the plan's ``run.init_from`` file)."""
    from paperkit.weights import load_weights

    factory = resolve(plan.model.spec.factory)
    try:
        model = (
            factory(plan.model.config, task.info)
            if plan.model.config is not None
            else factory(task.info, **plan.model.options)
        )
    except (ValueError, TypeError) as exc:
        raise PlanError(str(exc).splitlines()[0], f"{plan.path}: [model]") from None
    except (MemoryError, RuntimeError) as exc:  # sizes that cannot be allocated: name the table, not the allocator
        raise PlanError(
            f"cannot build the model: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'out of memory'}",
            f"{plan.path}: [model]",
        ) from None
    if not isinstance(model, nn.Module):
        raise PlanError(
            f"the model factory returned {type(model).__name__}, not a torch.nn.Module", f"{plan.path}: [model] name"
        )
    if init_from is None and plan.run.init_from:
        if is_reference(plan.run.init_from):
            raise PlanError(
                "a variant reference names another run's weights: resolve it first "
                "(paperkit.executor.references_for) and pass init_from",
                f"{plan.path}: [run] init_from",
            )
        init_from = resolve_path(plan, plan.run.init_from)
    if init_from is not None:
        try:
            load_weights(model, init_from)
        except CheckpointError as exc:
            raise CheckpointError(f"{plan.path}: [run] init_from: {exc}") from None
    return model
