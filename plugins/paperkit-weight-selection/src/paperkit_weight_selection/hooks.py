"""The ``init`` hook: a thin shell over :func:`paperkit_weight_selection.functional.weight_selection_`."""

from __future__ import annotations

import json
from typing import Any

from torch import nn

from paperkit import PlanError, RunContext, hookimpl, read_weights, unwrapped
from paperkit_weight_selection.functional import weight_selection_


class WeightSelection:
    """Reads the teacher's weights (``ctx.resolve_weights``: a file, or a variant of the plan run first) and
    overwrites the student's tensors with the selected ones; the head keeps the student's own init unless
    ``select_head``. Which keys were set is written to ``<run_dir>/weight-selection.json``.
    """

    def __init__(self, config: Any) -> None:
        from paperkit_weight_selection import WeightSelectionConfig

        self.config = config if config is not None else WeightSelectionConfig()
        self.selected: list[str] = []

    @hookimpl
    def init(self, model: nn.Module, ctx: RunContext) -> None:
        c = self.config
        where = f"{ctx.plan.path}: [init] weight-selection teacher"
        teacher = read_weights(ctx.resolve_weights(c.teacher, where))
        generator = ctx.generator("elements") if c.elements == "random" else None
        try:
            self.selected = weight_selection_(
                unwrapped(model),
                teacher,
                layers=c.layers,
                elements=c.elements,
                consistent=c.consistent,
                select_head=c.select_head,
                generator=generator,
            )
        except ValueError as exc:
            raise PlanError(f"{where} '{c.teacher}': {exc}") from None
        if ctx.is_main_process:
            ctx.run_dir.mkdir(parents=True, exist_ok=True)
            report = {
                "teacher": c.teacher,
                "layers": c.layers,
                "elements": c.elements,
                "consistent": c.consistent,
                "selected": self.selected,
            }
            (ctx.run_dir / "weight-selection.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
