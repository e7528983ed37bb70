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


class RichProgress(Progress):
    """Bars for study, experiences and steps with loss and samples/s."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bars

        self.bars = Bars(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
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
