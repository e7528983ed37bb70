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

from paperkit.testing.conformance import (
    ConformanceSuite,
    contract,
    contracts,
    iter_contracts,
)
from paperkit.testing.harness import (
    DEFAULT_OPTIMIZER,
    SMOKE_MLP,
    SMOKE_RUN,
    STREAM_EXPERIENCES,
    STREAM_TASKS,
    MethodHarness,
    assert_same_state,
    checkpoint_round_trip,
    section_for,
    smoke_plan,
    tiny_task,
    tiny_task_fixture,
)
from paperkit.testing.runs import (
    assert_same_run,
    builtin_registry,
    interrupt_and_resume,
    paperkit_registry,
    run_distributed,
    run_plan,
    run_plan_file,
    run_plan_text,
)

__all__ = [
    "ConformanceSuite",
    "DEFAULT_OPTIMIZER",
    "MethodHarness",
    "SMOKE_MLP",
    "SMOKE_RUN",
    "STREAM_EXPERIENCES",
    "STREAM_TASKS",
    "assert_same_run",
    "assert_same_state",
    "builtin_registry",
    "checkpoint_round_trip",
    "contract",
    "contracts",
    "interrupt_and_resume",
    "iter_contracts",
    "paperkit_registry",
    "run_distributed",
    "run_plan",
    "run_plan_file",
    "run_plan_text",
    "section_for",
    "smoke_plan",
    "tiny_task",
    "tiny_task_fixture",
]
