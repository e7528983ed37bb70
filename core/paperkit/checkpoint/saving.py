"""Writing checkpoints during a run: when one is due, what each process contributes, and the run directory."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import attrs

from paperkit.checkpoint.codec import FILE, FORMAT, FORMAT_VERSION, write_file
from paperkit.checkpoint.resume import Resume, distributions, resume_view
from paperkit.checkpoint.state import RunState, rng_state


# -- writing checkpoints during a run ----------------------------------------------------------
class Checkpointer:
    """Writes the run's checkpoint from the main process; every process contributes its RNG and method state."""

    def __init__(self, run_dir: Path, plan: Any, seed: int, registry: Any, accelerator: Any, restore: Resume) -> None:
        self.path = Path(run_dir) / FILE
        self.plan, self.accelerator = plan, accelerator
        self.identity = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "seed": seed,
            "variant": plan.variant,
            "plan": resume_view(plan),
            "distributions": distributions(plan, registry),
            "num_processes": accelerator.num_processes,
        }
        self.last_step: int | None = restore.state.step if restore.payload else None
        self.started = time.perf_counter()
        self.last_saved = self.started
        self.elapsed_before = restore.state.elapsed

    def save(
        self, model: Any, methods: Any, ctx: Any, state: RunState, optimizer: Any = None, scheduler: Any = None
    ) -> None:
        """Checkpoint the run at ``state`` (collective: every process must call it at the same point)."""
        mine = {"rng": rng_state(), "methods": methods.state_dict(), "generators": ctx.generator_state()}
        processes = [mine] if self.accelerator.num_processes == 1 else _gather(mine)
        if self.accelerator.is_main_process:
            metrics = self.path.parent / "metrics.jsonl"
            state.elapsed = self.elapsed()
            payload = {
                **self.identity,
                "position": {
                    **attrs.asdict(state),
                    "metrics_offset": metrics.stat().st_size if metrics.exists() else 0,
                },
                "model": self.accelerator.unwrap_model(model).state_dict(),
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "processes": processes,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            write_file(self.path, payload)
        self.last_step, self.last_saved = ctx.step, time.perf_counter()

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def due(self, ctx: Any) -> bool:
        """Every ``run.checkpoint_every`` steps, or at an epoch boundary inside the experience once
        ``run.checkpoint_seconds`` have passed since the last checkpoint.

        The time rule keeps short epochs from paying a file write each (a kill then
        costs at most that many seconds of training); the main process decides it,
        because saving is collective and every process must agree.
        """
        every = self.plan.run.checkpoint_every
        if every and ctx.step % every == 0:
            return True
        if ctx.experience_step % ctx.steps_per_epoch != 0 or ctx.experience_step >= ctx.total_steps:
            return False
        return self.overdue()

    def due_at_boundary(self, last: bool) -> bool:
        """Whether to checkpoint after an experience: always between experiences; after the last one
        only by the time rule, since a completed run deletes that checkpoint a moment later.
        """
        return not last or self.overdue()

    def overdue(self) -> bool:
        """``run.checkpoint_seconds`` have passed since the last checkpoint (decided on the main process, shared)."""
        wanted = time.perf_counter() - self.last_saved >= self.plan.run.checkpoint_seconds
        if self.accelerator.num_processes == 1:
            return wanted
        from accelerate.utils import broadcast_object_list

        return bool(broadcast_object_list([wanted])[0])

    def remove(self) -> None:
        if self.accelerator.is_main_process:
            self.path.unlink(missing_ok=True)

    def tell_how_to_resume(self, plan: Any) -> None:
        """One line on stderr saying what an interrupted run left and how to continue it."""
        if not self.accelerator.is_main_process:
            return
        if self.last_step is None or not self.path.exists():
            print(f"no checkpoint was written yet in {self.path.parent}", file=sys.stderr)
            return
        print(
            f"checkpoint at step {self.last_step} in {self.path.parent}; continue with: "
            f"paperkit run {plan.path} --resume {self.path.parent}",
            file=sys.stderr,
        )


def _gather(obj: Any) -> list[Any]:
    from accelerate.utils import gather_object

    return gather_object([obj])


def prepare_run_dir(run_dir: Path, resume: Resume, is_main: bool) -> None:
    """Cut ``metrics.jsonl`` back to where the checkpoint was taken (a killed run logged past it)."""
    if not is_main or not resume.payload:
        return
    metrics = Path(run_dir) / "metrics.jsonl"
    offset = resume.payload["position"].get("metrics_offset", 0)
    if metrics.exists() and metrics.stat().st_size > offset:
        with open(metrics, "rb+") as handle:
            handle.truncate(offset)
