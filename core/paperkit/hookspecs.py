"""The hook specifications: where in a run a method may act, and how results combine.

Every method is an object whose hook implementations (marked with
:data:`paperkit.hookimpl`) take any subset of a spec's arguments, by name and
without defaults. The engine calls the implementations of one hook **in plan
order** (the order methods appear in the plan, section by section in the order
``init, adapt, optimize, regularize, evaluate, continual``) and combines their
results by the rule each docstring states. No spec is ``firstresult``: where at
most one method may answer (the optimizer, the loss), the plan check rejects a
second one before training starts, instead of letting registration order decide.

``paperkit hooks`` and the docs' hook reference are generated from this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover - typing only; this module must not import torch
    import torch
    from torch import nn

    from paperkit.context import Batch, EvalSet, Optimization, Outputs, RunContext
    from paperkit.tasks.base import Experience

hookspec = pluggy.HookspecMarker("paperkit")


@hookspec
def init(model: nn.Module, ctx: RunContext) -> None:
    """Initialize the model's weights in place.

    When: once per run, after the model is built (and loaded from
    ``run.init_from`` if set), before ``adapt``. May draw a few training
    batches with ``ctx.sample_batches(n)`` (data-dependent schemes such as LSUV).

    Combines: every implementation runs, in plan order, each on the result of
    the previous one. Return value is ignored.
    """


@hookspec
def adapt(model: nn.Module, ctx: RunContext) -> nn.Module | None:
    """Return the model to train: wrap layers with adapters, reparameterize, or merge checkpoints.

    When: once per run, after ``init`` and before the first optimizer is built.

    Combines: chained in plan order; each implementation receives the model the
    previous one returned (``None`` means "unchanged, adapted in place").
    Parameters an adapter freezes must have ``requires_grad = False``; the
    optimizer only sees trainable parameters.
    """


@hookspec
def optimize(model: nn.Module, ctx: RunContext) -> Optimization | None:
    """Contribute to the optimization of the trainable parameters.

    When: at the start of every experience that trains (once for a single-task
    run), before ``before_experience`` batches flow. ``ctx.total_steps`` is the
    number of optimizer steps planned for this experience.

    Returns a :class:`paperkit.context.Optimization` with any of:
    ``optimizer`` (exactly one method in a plan provides it; the plan check
    enforces this through ``exclusive = ("optimizer",)``), ``lr_factor`` (a
    function of the step; factors from several methods multiply), and
    ``grad_transform`` (called after ``backward``, before the optimizer step;
    transforms run in plan order). For methods that need more than one forward,
    one backward and one step: ``param_rule`` (per-parameter multipliers of the
    optimizer's learning rate, weight decay or any numeric group setting, which
    any optimizer then honours), ``wrap`` (an optimizer around the plan's
    optimizer), ``closure`` (the step re-evaluates the loss on the same batch:
    the engine calls ``optimizer.step(closure)``) and ``term_gradients`` (the
    gradient of each named loss term, kept apart, combined by the method).

    Combines: exactly one optimizer per plan; learning-rate factors multiply;
    gradient transforms chain in plan order; parameter multipliers multiply;
    wrappers nest in plan order (the first wraps the optimizer); a closure step
    if any method asks for one; ``term_gradients`` from at most one method.
    Under several processes the closure's gradients and every per-term
    gradient are those of the global batch, as the plain step's are.
    """


@hookspec
def before_experience(model: nn.Module, experience: Experience, ctx: RunContext) -> bool | None:
    """Prepare for an experience of the stream (a task in continual learning).

    When: at the start of every experience, after ``optimize``.

    Combines: all run in plan order. Returning ``False`` skips gradient training
    for this experience (gradient-free learners); ``None`` or ``True`` trains.
    """


@hookspec
def continual_step(batch: Batch, model: nn.Module, ctx: RunContext) -> Batch | None:
    """Transform a training batch before the forward pass (replay, augmentation, mixing, selection).

    When: every training step, before the forward pass. Methods under
    ``[transform]`` (single-task batch transforms) run before those under
    ``[continual]``.

    Combines: chained in plan order; each receives the batch the previous one
    returned (``None`` means unchanged). The batch contract: a batch is a dict of
    tensors whose first dimension is the batch size, with at least ``x``, ``y``
    and ``index`` (:data:`paperkit.BATCH_KEYS` lists the keys with a core meaning:
    ``target`` soft targets, ``weight`` per-sample weights, ``replay``). A
    transform keeps every key it did not create, row for row with the samples it
    returns; the keys it adds or rewrites are listed in its record's
    ``batch_keys``. ``loss``, ``regularize`` and ``after_step`` see the final batch.
    """


@hookspec
def loss(model: nn.Module, batch: Batch, outputs: Outputs, ctx: RunContext) -> torch.Tensor | None:
    """Replace the task loss (the default is cross-entropy).

    When: every training step, after the forward pass, on the final batch.

    Combines: exclusive. At most one method in a plan implements it (the plan
    check rejects a second); without one, the built-in ``cross-entropy`` runs.
    Returns a scalar tensor. A loss that takes soft targets (``batch["target"]``)
    or per-sample weights (``batch["weight"]``) into account says so in its
    record (``honours = ("target", "weight")``; :func:`paperkit.per_sample_targets`
    and :func:`paperkit.weighted_mean` do the work); the plan check refuses a
    method that writes a key the loss does not honour.
    """


@hookspec
def regularize(model: nn.Module, batch: Batch, outputs: Outputs, ctx: RunContext) -> Mapping[str, torch.Tensor] | None:
    """Add named loss terms.

    When: every training step, after the loss, on the final batch.

    Combines: every term of every method is summed into the loss; each is
    logged as ``<method key>/<term name>`` in ``metrics.jsonl``.
    """


@hookspec
def after_step(model: nn.Module, batch: Batch, outputs: Outputs, ctx: RunContext) -> Mapping[str, float] | None:
    """Observe or act after an optimizer step (periodic evaluation, buffers, statistics).

    When: after every optimizer step; ``ctx.step`` is the global step count,
    ``batch`` the final batch the step trained on and ``outputs`` its forward
    pass (computed before the step: what the loss saw; detach before keeping).

    Combines: all run in plan order; returned numbers are logged to
    ``metrics.jsonl`` namespaced as ``<method key>/<name>``.
    """


@hookspec
def grow(model: nn.Module, ctx: RunContext) -> nn.Module | None:
    """Add parameters mid-run (widen or deepen the model): return the grown model, or ``None`` to keep it.

    When: after every optimizer step, after ``after_step``; ``ctx.step`` is the
    number of steps done. ``model`` is the plain module (not the data-parallel
    wrapper); grow a copy or the module itself, and draw any randomness from
    ``ctx.generator`` so every process grows it the same way.

    Combines: chained in plan order, each on the model the one before returned.
    After a growth the engine prepares the new model for the processes, calls
    every ``optimize`` hook again for a fresh optimizer over the new parameters
    (the learning-rate schedule keeps its position; optimizer moments start
    from zero) and logs ``{"event": "grow", ...}``. The run state records each
    growth; ``--resume`` builds the plan's model and calls ``grow`` again at
    each recorded step with ``ctx.replaying`` set, before loading the
    checkpoint's weights, so the method must grow the same shapes then.
    """


@hookspec
def after_experience(model: nn.Module, experience: Experience, ctx: RunContext) -> None:
    """Consolidate after an experience (closed-form updates, buffers, importance weights).

    When: at the end of every experience, after its training and before the
    evaluation that fills the accuracy-matrix row.

    Combines: all run in plan order.
    """


@hookspec
def evaluate(model: nn.Module, data: EvalSet, ctx: RunContext) -> Mapping[str, float] | None:
    """Measure the model on one evaluation set.

    When: before training (row "initial" of the accuracy matrix), then at the
    end of every experience, once per experience test set.
    ``data.predictions()`` returns logits and targets gathered over all
    processes (computed once per set and shared by all evaluate methods), so
    metrics are correct under several processes.

    Combines: merged; each metric is namespaced ``<method key>/<name>``. The
    built-in ``classification`` method always runs and fills the accuracy matrix.
    """


@hookspec
def after_run(model: nn.Module, ctx: RunContext) -> Mapping[str, Any] | None:
    """Summarize the run (curve statistics, plots written into ``ctx.run_dir``).

    When: once, after the last evaluation.

    Combines: merged into ``results.json`` under ``summary``, namespaced by method key.
    """
