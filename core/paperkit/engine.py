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
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import attrs
import torch
from torch import nn

from paperkit.adapters import merge_and_unload

# the data and evaluation halves of a run live in their own modules; these names stay importable from here
from paperkit.batches import EvalBatches, TrainBatches, _sample_batches, _share  # noqa: E402,F401
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
from paperkit.context import RunContext
from paperkit.dispatch import Methods
from paperkit.errors import PlanError
from paperkit.evaluation import (  # noqa: E402,F401
    _evaluate_accuracy,
    _flat,
    eval_set,
    evaluate_all,
    predict,
    summarize,
)
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
from paperkit.tasks.base import Experience, Task
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


@attrs.define
class Run:
    """What the loop of one run shares, built once by :func:`run` and handed to what trains it."""

    plan: Plan
    task: Task
    ctx: RunContext
    methods: Methods
    #: what a checkpoint saves of the loop itself: position, evaluations so far, samples seen, growth
    state: RunState
    recorder: RunRecorder
    checkpointer: Checkpointer
    #: Ctrl-C / SIGTERM, shared by every process
    stop: StopFlag
    #: what a checkpoint being resumed still has to restore (empty for a fresh run)
    resume: Resume
    progress: Progress


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
    resolver = Resolver(plan, references or {})  # files, and the files of runs made before this one
    init_from = resolver(plan.run.init_from, f"{plan.path}: [run] init_from") if plan.run.init_from else None
    task = build_task(plan)  # user errors (task, model, methods, checkpoint) surface before anything is written
    model = build_model(plan, task, init_from)
    methods = Methods(plan, registry)
    resumed = open_for_resume(run_dir, plan, seed, registry, accelerator) if resume else Resume()
    if claim:  # atomically (mkdir), so two runs started in the same second never share a directory
        created = new_run_dir(plan.run.output, plan.run.name, plan.variant, seed, create=accelerator.is_main_process)
        run_dir = _shared_run_dir(accelerator, created)
    elif not resume:
        run_dir = _shared_run_dir(accelerator, run_dir)
    prepare_run_dir(run_dir, resumed, accelerator.is_main_process)
    trackers = Trackers(plan.run.trackers, run_dir, plan, seed, accelerator.is_main_process)
    recorder = RunRecorder(run_dir, accelerator.is_main_process, trackers)
    progress.start_run(f"{plan.variant or plan.run.name} seed {seed}", task.num_experiences)
    ctx = RunContext(accelerator, plan, seed, task, run_dir)
    ctx.weights_resolver = resolver
    ctx.teacher_builder = teacher_builder(ctx, registry)
    ctx.batch_sampler = lambda n: _sample_batches(task.experiences[0], plan, seed, accelerator.device, n)
    _write_run_files(recorder, plan, seed, registry, accelerator, resumed)
    state, checkpointer = resumed.state, Checkpointer(run_dir, plan, seed, registry, accelerator, resumed)
    results: dict[str, Any] = {"status": "running", "seed": seed, "variant": plan.variant, "plan": plan.run.name}
    recorder.write_results(results)  # a run killed without a word still says it did not finish
    with StopFlag(accelerator) as stop:
        shared = Run(plan, task, ctx, methods, state, recorder, checkpointer, stop, resumed, progress)
        try:
            methods.call("init", model=model, ctx=ctx)
            for _key, adapted in methods.call("adapt", model=model, ctx=ctx):
                model = adapted if adapted is not None else model
            model = accelerator.prepare(resumed.regrow(model, methods, ctx))  # a model that grew: its shape again
            ctx.evaluator = lambda m, exps: _evaluate_accuracy(m, task, exps, plan, ctx)
            ctx.eval_set_builder = lambda m, data, split: eval_set(
                m, data, ctx.experience or task.experiences[0], ctx, "custom", split
            )
            if not resumed.payload:
                state.initial = evaluate_all(model, task, methods, plan, ctx, phase="initial")
                recorder.log({"event": "evaluation", "phase": "initial", "step": 0, "metrics": _flat(state.initial)})
            resumed.at_boundary(model, methods, ctx)  # a checkpoint taken between experiences
            for experience in task.experiences[state.next_experience :]:
                ctx.experience = experience
                model = train_experience(shared, model, experience)
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
                if stopping or checkpointer.due_at_boundary(last=experience is task.experiences[-1]):
                    checkpointer.save(model, methods, ctx, state)
                if stopping:
                    raise RunInterrupted("stopped between experiences")
                progress.end_experience()
            summary = {key: out for key, out in methods.call("after_run", model=model, ctx=ctx) if out}
            merge_and_unload(accelerator.unwrap_model(model))  # adapters fold in once every method has seen them
            elapsed = checkpointer.elapsed()
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
            checkpointer.remove()  # the run is complete; model.safetensors is its result
        except KeyboardInterrupt as exc:
            results.update(
                status="interrupted",
                incomplete=True,
                steps=ctx.step,
                checkpoint_step=checkpointer.last_step,
                signal=stop.signal,
            )
            if getattr(exc, "paperkit_where", None):  # raised inside a method's hook: which one
                results["interrupted_in"] = exc.paperkit_where  # type: ignore[attr-defined]
            checkpointer.tell_how_to_resume(plan)
            raise
        except Exception as exc:
            results.update(
                status="failed", steps=ctx.step, error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            )
            raise
        finally:
            if resolver.resolved:
                results["references"] = [
                    {"reference": ref, "file": str(path), "run_dir": str(rd) if rd else None}
                    for ref, path, rd in resolver.resolved
                ]
            recorder.write_results(results)
            recorder.close()
            progress.end_run()
    return RunResult(run_dir, results, accelerator.is_main_process)


def train_experience(run: Run, model: nn.Module, experience: Experience) -> nn.Module:
    """Train on one experience: every hook of a training step, in order, then the checkpoint.

    Returns the model, which is a new one when a method grew it (see :func:`grow`).
    """
    plan, ctx, methods, state, stop = run.plan, run.ctx, run.methods, run.state, run.stop
    checkpointer, resumed, recorder, progress = run.checkpointer, run.resume, run.recorder, run.progress
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
        resumed.check_applied(experience.index)
        return model
    watched = floating_parameters(model)
    guard = lambda total: check_loss(total, ctx, methods, stop, model, watched)  # noqa: E731  (also shares a Ctrl-C)
    step, optimizer = training_step(model, optimization, methods, ctx, guard)
    resumed.in_experience(model, optimizer, step.scheduler, methods, ctx)  # a checkpoint taken inside this experience
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
        checkpoint = stop.now() or checkpointer.due(ctx)
        if checkpoint or ctx.step % plan.run.log_every == 0 or ctx.experience_step == ctx.total_steps:
            check_parameters(model, ctx, methods, watched)  # never log or checkpoint diverged weights
        meter.log(ctx, optimizer, done.loss, done.terms, done.observed, state.samples)
        stopping = stop.now()  # asked again: a Ctrl-C during the logging above must still get its checkpoint
        if stopping and not checkpoint:
            check_parameters(model, ctx, methods, watched)
        if checkpoint or stopping:
            checkpointer.save(model, methods, ctx, state, optimizer, step.scheduler)
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
    plain = plain_optimizer(optimizer, accelerator)  # what the loop zeroes and steps, decided once
    scheduler = scheduler_for(
        plain, optimization.lr_factor, start=ctx.experience_step
    )  # counts the plain optimizer's steps
    step = TrainingStep(
        methods,
        ctx,
        plain,
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
        "loss": plan.loss_description(),  # what the logged training loss measures (the reports' labels)
        "versions": versions(dists),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _write_run_files(
    recorder: RunRecorder, plan: Plan, seed: int, registry: Any, accelerator: Any, resumed: Resume
) -> None:
    """plan.toml, resolved.toml and manifest.json; a resumed run keeps them and adds the resume to the manifest."""
    manifest = _manifest(plan, seed, registry, accelerator)
    if not resumed.payload:
        recorder.write_plan(_raw_for_run(plan), plan.resolved())
        recorder.write_manifest(manifest)
        return
    step = resumed.state.step
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
