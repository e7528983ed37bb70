"""Progress display: rich bars on a terminal, silence elsewhere.

The engine reports to a :class:`Progress`; the CLI decides whether it draws.
A study adds an overall bar (runs done of total) above the per-run bars.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI imports this module without torch
    import torch


class Progress:
    """Does nothing; the base for quiet runs, other processes and tests."""

    def start_study(self, total_runs: int) -> None: ...
    def run_done(self) -> None: ...
    def start_run(self, label: str, experiences: int) -> None: ...
    def start_experience(self, index: int, total_steps: int) -> None: ...

    def step(self, epoch: int, loss: float | torch.Tensor, samples_per_s: float) -> None:
        """One optimizer step; ``loss`` may be a scalar tensor, read only by a display that draws it."""

    def end_experience(self) -> None: ...
    def end_run(self) -> None: ...
    def close(self) -> None: ...

    def jobs(self, done: int, running: int, waiting: int) -> None:
        """Where a study's graph of runs stands (:mod:`paperkit.executor` calls it whenever that changes)."""

    def job_finished(self, label: str, seconds: float) -> None:
        """A run of the study ended, after ``seconds`` (in this process or in a worker)."""
        self.run_done()


class RichProgress(Progress):
    """Bars for study, experiences and steps with loss and samples/s."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bars

        self.bars = Bars(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.bars.start()
        self.study: Any = None
        self.run: Any = None
        self.steps: Any = None

    def start_study(self, total_runs: int) -> None:
        self.study = self.bars.add_task("study", total=total_runs, info="runs")

    def run_done(self) -> None:
        if self.study is not None:
            self.bars.advance(self.study)

    def jobs(self, done: int, running: int, waiting: int) -> None:
        if self.study is not None:
            self.bars.update(self.study, info=f"runs ({running} running, {waiting} waiting)")

    def start_run(self, label: str, experiences: int) -> None:
        for task in (self.run, self.steps):
            if task is not None:
                self.bars.remove_task(task)
        self.steps = None
        self.run = self.bars.add_task(label, total=experiences, info="experiences")

    def start_experience(self, index: int, total_steps: int) -> None:
        if self.steps is not None:
            self.bars.remove_task(self.steps)
        self.steps = self.bars.add_task(f"experience {index}", total=total_steps, info="")

    def step(self, epoch: int, loss: float | torch.Tensor, samples_per_s: float) -> None:
        if self.steps is not None:
            self.bars.update(
                self.steps, advance=1, info=f"epoch {epoch}  loss {float(loss):.4f}  {samples_per_s:,.0f} samples/s"
            )

    def end_experience(self) -> None:
        if self.run is not None:
            self.bars.advance(self.run)

    def close(self) -> None:
        self.bars.stop()


class SummaryProgress(Progress):
    """One line per finished run of a study, with an estimate of the time left (``--quiet``: no bars, still news).

    The estimate is the mean time of the runs done so far times the runs left: the runs of a study share their
    budget, so after the first one it is usually within a run's length of the truth.
    """

    def __init__(self, write: Any = None) -> None:
        import sys
        import time

        self._clock = time.perf_counter
        self._write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self.total = self.done = self.running = self.waiting = 0
        self.label = ""
        self.started = self.run_started = self._clock()

    def start_study(self, total_runs: int) -> None:
        self.total, self.done, self.started = total_runs, 0, self._clock()

    def start_run(self, label: str, experiences: int) -> None:
        self.label, self.run_started = label, self._clock()

    def run_done(self) -> None:
        now = self._clock()
        self._finished(self.label, now - self.run_started, now)

    def jobs(self, done: int, running: int, waiting: int) -> None:
        self.running, self.waiting = running, waiting

    def job_finished(self, label: str, seconds: float) -> None:
        self._finished(label, seconds, self._clock())

    def _finished(self, label: str, seconds: float, now: float) -> None:
        """The estimate divides the elapsed time by the runs done, so it holds for runs made in parallel too."""
        self.done += 1
        left = (now - self.started) / self.done * (self.total - self.done)
        tail = f"about {format_seconds(left)} left" if self.done < self.total else "study done"
        if self.running > 1 or self.waiting:  # a parallel launch: what else is under way
            tail += f" ({max(self.running - 1, 0)} running, {self.waiting} waiting)"
        self._write(f"[{self.done}/{self.total}] {label or 'run'}: {format_seconds(seconds)}; {tail}")


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``1 h 2 min``: durations as people say them."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
