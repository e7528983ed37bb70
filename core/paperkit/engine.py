"""The run loop: experiences -> epochs -> batches, calling every hook on the way.

Read :func:`run` and :func:`train_experience` top to bottom to know everything
a run does; the helpers below them only build things (data, the optimizer) or
measure (evaluation), and :mod:`paperkit.checkpoint` keeps the run safe
(checkpoints and resume, Ctrl-C, the divergence guard). The engine owns no
paper-specific logic: every decision a paper makes lives in a method behind a
hook (see :mod:`paperkit.hookspecs` for when each is called and how results
combine).

Accelerate runs the same code on one CPU, several CPU processes (``torchrun``,
``accelerate launch``) or many GPUs, and every process count sees the same
global batches in the same order: each experience's data order is drawn from
a generator seeded by the run seed, every global batch (``run.batch_size``) is
split into contiguous shares, one per process, and each process scales its
loss by ``share = n_p * P / b`` (its ``n_p`` of the batch's ``b`` samples
times the ``P`` processes) so that DDP's average of the processes' gradients
is the gradient of the global batch mean, even when ``b`` is not divisible by
``P``. The cost model: per step, one gradient all-reduce (DDP) and one
two-number all-reduce (shared Ctrl-C request and loss check); per evaluation
batch, one gather of logits padded to equal shares. Parity with one process
holds for models whose forward pass treats samples independently (no
BatchNorm statistics, no dropout) and for methods whose state does not depend
on which process saw a sample.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import attrs
import torch
from torch import nn
from torch.utils.data import DataLoader

from paperkit.adapters import merge_and_unload
from paperkit.building import build_model, build_task  # noqa: F401  (build_model: older plugins import it here)
from paperkit.checkpoint import (
    Checkpointer,
    Resume,
    RunInterrupted,
    RunState,
    StopFlag,
    check_loss,
    check_parameters,
    floating_parameters,
    open_for_resume,
    prepare_run_dir,
)
from paperkit.context import EvalSet, RunContext
from paperkit.dispatch import Methods
from paperkit.errors import PlanError
from paperkit.metrics import stream_metrics
from paperkit.plan import Plan
from paperkit.progress import Progress
from paperkit.references import Resolver, resolve_path
from paperkit.runio import RunRecorder, new_run_dir, versions, write_json
from paperkit.spec import KINDS
from paperkit.step import (  # noqa: F401  (forward, unwrapped: older plugins import them from here)
    TrainingStep,
    build_optimizer,
    forward,
    scheduler_for,
    unwrapped,
)
from paperkit.tasks.base import Experience, IndexedDataset, Task
from paperkit.teachers import teacher_builder
from paperkit.trackers import Trackers

#: The headline metric of class tasks (other kinds: ``paperkit.spec.KINDS``).
ACCURACY = KINDS["class"].headline


@attrs.define
class RunResult:
    run_dir: Path
    results: dict[str, Any]
    #: false on the other processes of a multi-process launch, which must not write reports
    is_main_process: bool = True


def run(
    plan: Plan,
    seed: int,
    registry: Any,
    progress: Progress | None = None,
    run_dir: Path | None = None,
    resume: Path | None = None,
    references: Mapping[str, Path] | None = None,
) -> RunResult:
    """Train and evaluate ``plan`` for one seed; ``resume`` continues that run directory from its checkpoint.

    ``references`` maps each ``variant:`` reference of the plan to the weights file its run left:
    this function trains one run, and the runs a plan refers to are made before it by
    :mod:`paperkit.executor` (which every caller of a plan with references goes through).
    """
    progress = progress or Progress()
    accelerator = _accelerator(plan)
    seed_everything(seed, accelerator.device)
    claim = resume is None and run_dir is None  # a fresh directory of our own, claimed once the plan is known good
    run_dir = Path(resume) if resume else (run_dir or new_run_dir(plan.run.output, plan.run.name, plan.variant, seed))
    weights = Resolver(plan, references or {})  # files, and the files of runs made before this one
    init_from = weights(plan.run.init_from, f"{plan.path}: [run] init_from") if plan.run.init_from else None
    task = build_task(plan)  # user errors (task, model, methods, checkpoint) surface before anything is written
    model = build_model(plan, task, init_from)
    methods = Methods(plan, registry)
    restore = open_for_resume(run_dir, plan, seed, registry, accelerator) if resume else Resume()
    if claim:  # atomically (mkdir), so two runs started in the same second never share a directory
        created = new_run_dir(plan.run.output, plan.run.name, plan.variant, seed, create=accelerator.is_main_process)
        run_dir = _shared_run_dir(accelerator, created)
    elif not resume:
        run_dir = _shared_run_dir(accelerator, run_dir)
    prepare_run_dir(run_dir, restore, accelerator.is_main_process)
    trackers = Trackers(plan.run.trackers, run_dir, plan, seed, accelerator.is_main_process)
    recorder = RunRecorder(run_dir, accelerator.is_main_process, trackers)
    progress.start_run(f"{plan.variant or plan.run.name} seed {seed}", task.num_experiences)
    ctx = RunContext(accelerator, plan, seed, task, run_dir)
    ctx.weights_resolver = weights
    ctx.teacher_builder = teacher_builder(ctx, registry)
    ctx.batch_sampler = lambda n: _sample_batches(task.experiences[0], plan, seed, accelerator.device, n)
    _write_run_files(recorder, plan, seed, registry, accelerator, restore)
    state, saver = restore.state, Checkpointer(run_dir, plan, seed, registry, accelerator, restore)
    results: dict[str, Any] = {"status": "running", "seed": seed, "variant": plan.variant, "plan": plan.run.name}
    recorder.write_results(results)  # a run killed without a word still says it did not finish
    with StopFlag(accelerator) as stop:
        try:
            methods.call("init", model=model, ctx=ctx)
            for _key, adapted in methods.call("adapt", model=model, ctx=ctx):
                model = adapted if adapted is not None else model
            model = accelerator.prepare(restore.regrow(model, methods, ctx))  # a model that grew: its shape again
            ctx.evaluator = lambda m, exps: _evaluate_accuracy(m, task, exps, plan, ctx)
            ctx.eval_set_builder = lambda m, data, split: eval_set(
                m, data, ctx.experience or task.experiences[0], ctx, "custom", split
            )
            if not restore.payload:
                state.initial = evaluate_all(model, task, methods, plan, ctx, phase="initial")
                recorder.log({"event": "evaluation", "phase": "initial", "step": 0, "metrics": _flat(state.initial)})
            restore.at_boundary(model, methods, ctx)  # a checkpoint taken between experiences
            for experience in task.experiences[state.next_experience :]:
                ctx.experience = experience
                model = train_experience(
                    model, experience, methods, plan, ctx, state, saver, stop, restore, recorder, progress
                )
                methods.call("after_experience", model=model, experience=experience, ctx=ctx, step=ctx.step)
                state.rows.append(evaluate_all(model, task, methods, plan, ctx, phase="experience_end"))
                recorder.log(
                    {
                        "event": "evaluation",
                        "experience": experience.index,
                        "step": ctx.step,
                        "metrics": _flat(state.rows[-1]),
                    }
                )
                state.phase = "done"
                stopping = stop.between_experiences()
                if stopping or saver.due_at_boundary(last=experience is task.experiences[-1]):
                    saver.save(model, methods, ctx, state)
                if stopping:
                    raise RunInterrupted("stopped between experiences")
                progress.end_experience()
            summary = {key: out for key, out in methods.call("after_run", model=model, ctx=ctx) if out}
            merge_and_unload(accelerator.unwrap_model(model))  # adapters fold in once every method has seen them
            elapsed = saver.elapsed()
            results.update(summarize(task, state.initial, state.rows, summary, plan.task.kind))
            results.update(
                status="completed",
                steps=ctx.step,
                wall_time_s=elapsed,
                samples_per_s=state.samples / max(elapsed, 1e-9),
            )
            if plan.run.save_model:
                ctx.save_weights(model, "model")
            recorder.write_results(results)  # completed on disk before the checkpoint goes: a kill here loses nothing
            saver.remove()  # the run is complete; model.safetensors is its result
        except KeyboardInterrupt as exc:
            results.update(
                status="interrupted",
                incomplete=True,
                steps=ctx.step,
                checkpoint_step=saver.last_step,
                signal=stop.signal,
            )
            if getattr(exc, "paperkit_where", None):  # raised inside a method's hook: which one
                results["interrupted_in"] = exc.paperkit_where  # type: ignore[attr-defined]
            saver.tell_how_to_resume(plan)
            raise
        except Exception as exc:
            results.update(
                status="failed", steps=ctx.step, error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            )
            raise
        finally:
            if weights.resolved:
                results["references"] = [
                    {"reference": ref, "file": str(path), "run_dir": str(rd) if rd else None}
                    for ref, path, rd in weights.resolved
                ]
            recorder.write_results(results)
            recorder.close()
            progress.end_run()
    return RunResult(run_dir, results, accelerator.is_main_process)


def train_experience(
    model: nn.Module,
    experience: Experience,
    methods: Methods,
    plan: Plan,
    ctx: RunContext,
    state: RunState,
    saver: Checkpointer,
    stop: StopFlag,
    restore: Resume,
    recorder: RunRecorder,
    progress: Progress,
) -> nn.Module:
    """Train on one experience: every hook of a training step, in order, then the checkpoint.

    Returns the model, which is a new one when a method grew it (see :func:`grow`).
    """
    accelerator = ctx.accelerator
    loader = TrainBatches(experience.train, plan, ctx.seed, experience.index, accelerator)
    ctx.train_loader, ctx.steps_per_epoch = loader, len(loader)
    ctx.total_steps = int(min(plan.run.epochs * len(loader), plan.run.max_steps or math.inf))
    ctx.epoch = ctx.experience_step = state.experience_step = 0
    state.experience, state.phase = experience.index, "train"
    optimization = methods.optimization(ctx.step, model=model, ctx=ctx)
    wants_training = [
        r for _k, r in methods.call("before_experience", model=model, experience=experience, ctx=ctx, step=ctx.step)
    ]
    if not plan.run.train or False in wants_training or optimization.optimizer is None:
        restore.check_applied(experience.index)
        return model
    watched = floating_parameters(model)
    guard = lambda total: check_loss(total, ctx, methods, stop, model, watched)  # noqa: E731  (also shares a Ctrl-C)
    step, optimizer = training_step(model, optimization, methods, ctx, guard)
    restore.in_experience(model, optimizer, step.scheduler, methods, ctx)  # a checkpoint taken inside this experience
    progress.start_experience(experience.index, ctx.total_steps)
    meter = StepLog(recorder, progress, plan.run.log_every)
    model.train()
    world, grows = accelerator.num_processes, methods.implements("grow")
    for epoch, batch, share in loader.steps(ctx.experience_step, ctx.total_steps):
        ctx.epoch = epoch
        done = step(model, batch, share)
        if grows and (grown := grow(model, methods, ctx, state, recorder)) is not None:
            model, watched = grown, floating_parameters(grown)  # and a new optimizer for the new parameters:
            step, optimizer = training_step(
                model, methods.optimization(ctx.step, model=model, ctx=ctx), methods, ctx, guard
            )
        state.step, state.experience_step = ctx.step, ctx.experience_step
        state.samples += done.batch["y"].shape[0] * world
        checkpoint = stop.now() or saver.due(ctx)
        if checkpoint or ctx.step % plan.run.log_every == 0 or ctx.experience_step == ctx.total_steps:
            check_parameters(model, ctx, methods, watched)  # never log or checkpoint diverged weights
        meter.log(ctx, optimizer, done.loss, done.terms, done.observed, state.samples)
        stopping = stop.now()  # asked again: a Ctrl-C during the logging above must still get its checkpoint
        if stopping and not checkpoint:
            check_parameters(model, ctx, methods, watched)
        if checkpoint or stopping:
            saver.save(model, methods, ctx, state, optimizer, step.scheduler)
        if stopping:
            raise RunInterrupted(f"stopped after step {ctx.step}")
    return model


def training_step(
    model: nn.Module, optimization: Any, methods: Methods, ctx: RunContext, guard: Any
) -> tuple[TrainingStep, Any]:
    """The experience's step function over ``optimization``, and the prepared optimizer the checkpoint saves.

    The learning-rate schedule starts at ``ctx.experience_step`` (zero, except
    after a model grew mid-experience and its optimizer was rebuilt).
    """
    accelerator = ctx.accelerator
    optimizer = accelerator.prepare(build_optimizer(optimization, model))
    stepped = plain_optimizer(optimizer, accelerator)  # what the loop zeroes and steps, decided once
    scheduler = scheduler_for(stepped, optimization.lr_factor, start=ctx.experience_step)  # counts stepped's steps
    step = TrainingStep(
        methods,
        ctx,
        stepped,
        scheduler,
        optimization.grad_transform,
        ctx.plan.run.grad_clip,
        guard,
        closure=optimization.closure,
        term_gradients=optimization.term_gradients,
    )
    return step, optimizer


def grow(
    model: nn.Module, methods: Methods, ctx: RunContext, state: RunState, recorder: RunRecorder
) -> nn.Module | None:
    """Every ``grow`` hook in plan order, each on the model the one before returned: the grown model, prepared
    for the processes and in training mode, or ``None`` when no method grew it.

    Each growth is remembered in the run state (method and step), so ``--resume``
    can grow a freshly built model the same way before it loads the checkpoint
    (:meth:`paperkit.checkpoint.Resume.regrow`).
    """
    current, changed = unwrapped(model), False
    for key in methods.implementing("grow"):
        out = methods.call_one(key, "grow", ctx.step, model=current, ctx=ctx)
        if out is not None:
            current, changed = out, True
            state.grown.append([key, ctx.step])
            recorder.log(
                {
                    "event": "grow",
                    "method": key,
                    "step": ctx.step,
                    "parameters": sum(p.numel() for p in current.parameters()),
                }
            )
    if not changed:
        return None
    grown = ctx.accelerator.prepare(current)
    grown.train()
    return grown


def plain_optimizer(optimizer: Any, accelerator: Any) -> Any:
    """The optimizer to call ``step`` and ``zero_grad`` on in the training step.

    Accelerate's ``AcceleratedOptimizer.step`` looks for an optional package on
    ``sys.path`` twice per call and its ``zero_grad`` inspects a signature each
    time (together a few percent of a small model's step). Without a gradient
    scaler, XLA or gradient accumulation both are exactly the wrapped
    optimizer's, so that one is returned.
    """
    from accelerate.utils import DistributedType

    inner = getattr(optimizer, "optimizer", None)
    plain = (
        inner is not None
        and getattr(optimizer, "scaler", None) is None
        and accelerator.distributed_type != DistributedType.XLA
        and accelerator.sync_gradients
    )
    return inner if plain else optimizer


class StepLog:
    """A ``metrics.jsonl`` record every ``run.log_every`` steps (and whenever a method reports); the progress bar every step."""

    def __init__(self, recorder: RunRecorder, progress: Progress, every: int) -> None:
        self.recorder, self.progress, self.every = recorder, progress, every
        self.tick, self.tick_samples = time.perf_counter(), cast("int | None", None)

    def log(
        self,
        ctx: RunContext,
        optimizer: Any,
        loss: torch.Tensor,
        terms: dict[str, torch.Tensor],
        observed: dict[str, float],
        samples: int,
    ) -> None:
        if self.tick_samples is None:
            self.tick_samples = samples - 1
        if ctx.step % self.every != 0 and not observed:
            self.progress.step(ctx.epoch, loss, 0.0)  # the tensor: a quiet run never reads it
            return
        now = time.perf_counter()
        rate = (samples - self.tick_samples) / max(now - self.tick, 1e-9)
        self.tick, self.tick_samples = now, samples
        record = {
            "step": ctx.step,
            "experience": ctx.experience_index,
            "epoch": ctx.epoch,
            "loss": loss.item(),
            "lr": optimizer.param_groups[0]["lr"],
            "samples_per_s": rate,
            **{k: v.item() for k, v in terms.items()},
            **observed,
        }
        self.recorder.log(record)
        self.progress.step(ctx.epoch, record["loss"], rate)


# -- building ------------------------------------------------------------------------
def _accelerator(plan: Plan) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    # Accelerate sets up several CPU processes (torchrun on a machine without GPUs) only when asked
    # for the CPU; without that, every process would silently run the whole job on its own.
    accelerators = torch.cuda.is_available() or (hasattr(torch, "accelerator") and torch.accelerator.is_available())
    # The engine shards its own data (TrainBatches, EvalBatches); split_batches keeps the plan's
    # batch size global for any loader a method prepares itself.
    accelerator = Accelerator(
        cpu=plan.run.cpu or not accelerators, dataloader_config=DataLoaderConfiguration(split_batches=True)
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != launched:
        raise PlanError(
            f"launched as {launched} processes, but Accelerate set up {accelerator.num_processes}; check the launcher's configuration"
        )
    return accelerator


def seed_everything(seed: int, device: torch.device) -> None:
    """Seed Python, NumPy and torch; on accelerators also ask for deterministic kernels.

    CPU kernels are deterministic for a fixed thread count already, and turning
    the switch on imports torch's compiler stack (seconds of start-up). On GPUs
    the switch matters; cuBLAS then needs a fixed workspace, and an operation
    without a deterministic kernel warns instead of stopping a long run.
    """
    from accelerate.utils import set_seed

    set_seed(seed)
    if device.type != "cpu":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def _shared_run_dir(accelerator: Any, run_dir: Path) -> Path:
    """Every process must agree on the directory the main process chose."""
    if accelerator.num_processes == 1:
        return run_dir
    from accelerate.utils import broadcast_object_list

    return Path(broadcast_object_list([str(run_dir)])[0])


def _relative(plan: Plan, path: str) -> Path:
    return resolve_path(plan, path)


# -- data ------------------------------------------------------------------------------
def _share(ids: torch.Tensor, rank: int, world: int) -> tuple[torch.Tensor, float]:
    """This process's contiguous part of a global batch and its loss scale ``n_p * P / b``.

    A process left without samples (``b < P``) repeats the batch's first sample
    with scale 0: it still takes part in the gradient all-reduce, adding nothing.
    """
    if world == 1:
        return ids, 1.0
    mine = torch.tensor_split(ids, world)[rank]
    if len(mine) == 0:
        return ids[:1], 0.0
    return mine, len(mine) * world / len(ids)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch on ``device``; on the CPU it is already there (batches come from host memory), so as is."""
    if device.type == "cpu":
        return batch
    return {k: v.to(device) for k, v in batch.items()}


class TrainBatches:
    """One experience's training data: global batches in a seeded order, this process's share of each.

    The order is a function of the run seed and the experience only: epoch
    ``e`` is the ``e``-th permutation drawn from a generator seeded with
    ``seed * 1000 + experience`` (the draws a shuffling ``DataLoader`` makes),
    so any process count, and a resumed run, recompute it instead of storing
    it. ``steps(start, stop)`` yields ``(epoch, batch, share)`` for the
    experience's steps ``start..stop-1``; iterating the object gives one pass
    over this process's share of the current epoch (for hooks).
    """

    def __init__(self, dataset: Any, plan: Plan, seed: int, experience: int, accelerator: Any) -> None:
        self.dataset, self.batch_size, self.num_workers = dataset, plan.run.batch_size, plan.run.num_workers
        self.seed, self.epoch = seed * 1000 + experience, 0
        self.rank, self.world, self.device = accelerator.process_index, accelerator.num_processes, accelerator.device
        self._orders: list[torch.Tensor] = []
        self._generator = torch.Generator().manual_seed(self.seed)

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        n = len(self.dataset)
        while len(self._orders) <= epoch:
            torch.empty((), dtype=torch.int64).random_(generator=self._generator)  # the loader iterator's base seed
            self._orders.append(torch.randperm(n, generator=self._generator))
            torch.randperm(n, generator=self._generator)  # the sampler's trailing (empty) remainder draw
        return self._orders[epoch]

    def steps(self, start: int, stop: int) -> Iterator[tuple[int, dict[str, torch.Tensor], float]]:
        while start < stop:
            epoch, first = divmod(start, len(self))
            last = min(len(self), first + stop - start)
            self.epoch = epoch
            for batch, share in self._batches(epoch, first, last):
                yield epoch, batch, share
            start += last - first

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch, _share in self._batches(self.epoch, 0, len(self)):
            yield batch

    def _batches(self, epoch: int, first: int, last: int) -> Iterator[tuple[dict[str, torch.Tensor], float]]:
        order, b = self.order(epoch), self.batch_size
        parts = [_share(order[k * b : (k + 1) * b], self.rank, self.world) for k in range(first, last)]
        batches = _fetch(self.dataset, [ids for ids, _ in parts], self.num_workers)
        for batch, (_ids, share) in zip(batches, parts):
            yield _to(batch, self.device), share


class EvalBatches:
    """A test set in order: each global batch split over the processes, padded to equal parts so they can be gathered.

    Batches carry ``valid`` (false on padding rows); :func:`predict` gathers
    and drops the padding, so every process gets the whole set exactly once,
    in order, whatever the set size and process count.
    """

    def __init__(self, dataset: Any, batch_size: int, accelerator: Any) -> None:
        self.dataset, self.batch_size = dataset, batch_size
        self.rank, self.world, self.device = accelerator.process_index, accelerator.num_processes, accelerator.device

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        n, parts = len(self.dataset), []
        for start in range(0, n, self.batch_size):
            ids = torch.arange(start, min(n, start + self.batch_size))
            pieces = torch.tensor_split(ids, self.world)
            mine, width = pieces[self.rank], len(pieces[0])
            pad = (mine[-1:] if len(mine) else ids[:1]).repeat(width - len(mine))
            parts.append((torch.cat([mine, pad]), len(mine)))
        for batch, (ids, real) in zip(_fetch(self.dataset, [ids for ids, _ in parts]), parts):
            batch["valid"] = torch.arange(len(ids)) < real
            yield _to(batch, self.device)


def _fetch(dataset: Any, index_batches: list[torch.Tensor], num_workers: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """The batches with the given sample indices, in order.

    An :class:`IndexedDataset` that keeps its tensors in memory is sliced
    directly: the same values a ``DataLoader`` would collate, without a Python
    call per sample. Anything else (a dataset that builds items on the fly,
    worker processes) goes through a ``DataLoader``.
    """
    if num_workers == 0 and type(dataset).__getitem__ is IndexedDataset.__getitem__:
        for ids in index_batches:
            yield {
                "x": dataset.x[ids],
                "y": dataset.y[ids],
                "index": dataset.index[ids],
                **{k: v[ids] for k, v in dataset.extras.items()},
            }
        return
    yield from DataLoader(
        dataset,
        batch_sampler=[ids.tolist() for ids in index_batches],
        num_workers=num_workers,
        generator=torch.Generator(),
    )  # its own generator: iterating draws nothing from the global one


def _sample_batches(
    experience: Experience, plan: Plan, seed: int, device: torch.device, n: int
) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed + 7919)
    loader = DataLoader(experience.train, batch_size=plan.run.batch_size, shuffle=True, generator=generator)
    out = []
    for batch in loader:
        out.append(_to(batch, device))
        if len(out) == n:
            break
    return out


# -- evaluation ----------------------------------------------------------------------
def _eval_loader(experience: Experience, plan: Plan, ctx: RunContext) -> EvalBatches:
    return EvalBatches(experience.test, plan.run.eval_batch_size, ctx.accelerator)


def predict(model: nn.Module, loader: Any, experience: Experience, ctx: RunContext, features: bool = False) -> Any:
    """Logits and targets over a whole evaluation set, gathered from every process, each sample once and in order;
    with ``features``, also the model's features (``Outputs.features``) as a third tensor."""
    was_training = model.training
    model.eval()
    logits_all, targets_all, features_all = [], [], []
    with torch.no_grad():
        for batch in loader:
            outputs = forward(model, batch["x"], ctx, experience)
            parts = [outputs.logits.contiguous(), batch["y"]]
            if features:
                if outputs.features is None:
                    raise ValueError("the model offers no features (it is not a paperkit Classifier)")
                parts.append(outputs.features.contiguous())
            if ctx.accelerator.num_processes > 1:
                *parts, valid = ctx.accelerator.gather((*parts, batch["valid"].long()))
                parts = [p[valid.bool()] for p in parts]
            logits_all.append(parts[0].float().cpu())
            targets_all.append(parts[1].cpu())
            if features:
                features_all.append(parts[2].float().cpu())
    model.train(was_training)
    if features:
        return torch.cat(logits_all), torch.cat(targets_all), torch.cat(features_all)
    return torch.cat(logits_all), torch.cat(targets_all)


def _predictor(model: nn.Module, loader: Any, experience: Experience, ctx: RunContext, features: bool = False) -> Any:
    """``predict`` for one evaluation set, deferred until an evaluate method asks for the predictions."""
    return lambda: predict(model, loader, experience, ctx, features)


def eval_set(
    model: nn.Module, dataset: Any, experience: Experience, ctx: RunContext, phase: str, split: str
) -> EvalSet:
    """An :class:`EvalSet` over any dataset (a test set, ``experience.ood[...]``, the training or validation set)."""
    loader = EvalBatches(dataset, ctx.plan.run.eval_batch_size, ctx.accelerator)
    return EvalSet(
        experience,
        loader,
        phase,
        _predictor(model, loader, experience, ctx),
        split=split,
        predict_features=_predictor(model, loader, experience, ctx, features=True),
    )


def evaluate_all(
    model: nn.Module, task: Task, methods: Methods, plan: Plan, ctx: RunContext, phase: str
) -> dict[int, dict[str, float]]:
    """Every evaluate method on every experience's test set: ``{experience: {metric: value}}``.

    An experience's out-of-distribution test sets (``experience.ood``) are evaluated
    the same way; their metrics sit beside the in-distribution ones as
    ``ood:<set>/<key>/<name>`` (so ``results.json`` reports both, and a claim can
    name either).
    """
    row: dict[int, dict[str, float]] = {}
    for experience in task.experiences:
        metrics: dict[str, float] = {}
        for split, dataset in (("test", experience.test), *((f"ood:{n}", d) for n, d in experience.ood.items())):
            data = eval_set(model, dataset, experience, ctx, phase, split)
            prefix = "" if split == "test" else f"{split}/"
            for key, out in methods.call("evaluate", model=model, data=data, ctx=ctx, step=ctx.step):
                for name, value in (out or {}).items():
                    metrics[f"{prefix}{key}/{name}"] = float(value)
        row[experience.index] = metrics
    return row


def _evaluate_accuracy(
    model: nn.Module, task: Task, experiences: list[int], plan: Plan, ctx: RunContext
) -> dict[int, dict[str, float]]:
    """The task kind's scores (accuracy and loss for class tasks) on the test sets of ``experiences``."""
    from paperkit.scores import SCORES

    scores = SCORES[plan.task.kind]
    out = {}
    for index in experiences:
        experience = task.experiences[index]
        out[index] = scores(*predict(model, _eval_loader(experience, plan, ctx), experience, ctx))
    return out


def summarize(
    task: Task,
    initial: dict[int, dict[str, float]],
    rows: list[dict[int, dict[str, float]]],
    summary: dict[str, Any],
    kind: str = "class",
) -> dict[str, Any]:
    """results.json content: final metrics, per-experience metrics, and for streams the matrix of the task kind's
    headline metric (``accuracy_matrix``, whatever the metric; ``headline`` names it) and the stream metrics on it."""
    headline = KINDS[kind]
    last = rows[-1] if rows else initial
    final = _mean_over_experiences(last)
    out: dict[str, Any] = {
        "final": final,
        "initial": _mean_over_experiences(initial),
        "per_experience": {str(k): v for k, v in last.items()},
        "summary": summary,
        "headline": {"metric": headline.headline, "direction": headline.direction},
    }
    if task.num_experiences > 1 and rows:
        R = [[row[j].get(headline.headline, float("nan")) for j in range(task.num_experiences)] for row in rows]
        b = [initial[j].get(headline.headline, float("nan")) for j in range(task.num_experiences)]
        out.update(accuracy_matrix=R, initial_accuracy=b, **stream_metrics(R, b, headline.direction))
    return out


def _mean_over_experiences(row: dict[int, dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over the experiences that report it."""
    names = sorted({name for metrics in row.values() for name in metrics})
    return {
        name: sum(m[name] for m in row.values() if name in m) / sum(name in m for m in row.values()) for name in names
    }


def _flat(row: dict[int, dict[str, float]]) -> dict[str, float]:
    return {f"{name}@{exp}": value for exp, metrics in row.items() for name, value in metrics.items()}


def _raw_for_run(plan: Plan) -> dict[str, Any]:
    raw = {k: v for k, v in plan.raw.items() if k not in ("variants", "study")}
    if plan.variant:
        from paperkit.plan import apply_variant

        raw = apply_variant(plan.raw, plan.variant, str(plan.path))
        raw.pop("study", None)
    return raw


def _manifest(plan: Plan, seed: int, registry: Any, accelerator: Any) -> dict[str, Any]:
    dists = {}
    for use in plan.methods:
        dist, version = registry.origin("method", use.key)
        dists[dist] = version
    return {
        "seed": seed,
        "variant": plan.variant,
        "plan_file": str(plan.path),
        "plan_fingerprint": plan.fingerprint(),
        "device": str(accelerator.device),
        "num_processes": accelerator.num_processes,
        # CPU results are bit-reproducible for a fixed thread count: reductions split by thread
        "torch_threads": torch.get_num_threads(),
        "methods": [u.key for u in plan.methods],
        "versions": versions(dists),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _write_run_files(
    recorder: RunRecorder, plan: Plan, seed: int, registry: Any, accelerator: Any, restore: Resume
) -> None:
    """plan.toml, resolved.toml and manifest.json; a resumed run keeps them and adds the resume to the manifest."""
    manifest = _manifest(plan, seed, registry, accelerator)
    if not restore.payload:
        recorder.write_plan(_raw_for_run(plan), plan.resolved())
        recorder.write_manifest(manifest)
        return
    step = restore.state.step
    recorder.log({"event": "resumed", "step": step})
    if recorder.is_main:
        path = recorder.run_dir / "manifest.json"
        previous = json.loads(path.read_text(encoding="utf-8")) if path.exists() else manifest
        entry = {
            "step": step,
            "time": manifest["started"],
            "command": " ".join(sys.argv),
            "versions": manifest["versions"],
            "torch_threads": manifest["torch_threads"],
        }
        before = previous.get("torch_threads")
        if before is not None and before != manifest["torch_threads"]:  # reductions sum in another order from here on
            print(
                f"warning: the run used {before} torch threads, this resume uses {manifest['torch_threads']}; results "
                "will drift from an uninterrupted run by float rounding (set OMP_NUM_THREADS to match)",
                file=sys.stderr,
            )
        write_json(path, {**previous, "resumes": [*previous.get("resumes", []), entry]})
