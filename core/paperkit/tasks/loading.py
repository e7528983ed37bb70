"""Any installed task by name, outside a plan: another task's data for a method that needs it.

A method sometimes needs the inputs of a task other than the plan's: CorDA's knowledge-preserving decomposition
reads the covariance of a *knowledge* task's inputs, a forgetting probe measures the model on a held-out domain.
:func:`load_task` builds such a task exactly as a plan's ``[task]`` table would name it (the task's own options,
validated), so plugins need neither the core's private task modules nor a copy of them.
"""

from __future__ import annotations

from typing import Any

from paperkit.errors import PlanError
from paperkit.tasks.base import Task


def load_task(name: str, **options: Any) -> Task:
    """The installed task ``name`` built with ``options`` (its own options; the core's ``[task]`` options such as
    ``label_noise`` or ``validation_fraction`` belong to plans and are not applied here)."""
    from paperkit.registry import Registry
    from paperkit.spec import resolve

    where = f"load_task('{name}')"
    spec = Registry().get("task", name, where)
    factory = resolve(spec.factory)
    try:
        if spec.config is None:
            task = factory(**options)
        else:
            task = factory(spec.config(**options))
    except TypeError as exc:
        raise PlanError(str(exc).splitlines()[0], where) from None
    except ValueError as exc:
        raise PlanError(str(exc).splitlines()[0], where) from None
    if not isinstance(task, Task):
        raise PlanError(f"the factory returned {type(task).__name__}, not a Task", where)
    return task
