"""The Model Stock hook: merge the fine-tuned weights a plan names into the model (the pretrained anchor)."""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from paperkit import hookimpl
from paperkit import CheckpointError, read_weights

from paperkit_model_stock.functional import model_stock_merge


class ModelStock:
    """``adapt``: the model as loaded (``run.init_from``) is ``w0``; the files in ``finetuned`` are ``w1 … wk``.

    The merged weights replace the model's in place. Paths are relative to the
    plan; ``variant:NAME[@SEED|@+K]`` runs another variant of the plan first
    (see :mod:`paperkit.references`), so one plan can pretrain, fine-tune and merge.
    """

    def __init__(self, config: Any) -> None:
        self.config = config
        self.ratios: dict[str, float] = {}
        self.files: list[str] = []

    @hookimpl
    def adapt(self, model: nn.Module, ctx: Any) -> nn.Module:
        where = f"{ctx.plan.path}: [adapt] finetuned"
        paths = [ctx.resolve_weights(value, where) for value in self.config.finetuned]
        self.files = [str(p) for p in paths]
        states = [read_weights(p) for p in paths]
        base = model.state_dict()
        try:
            merged, self.ratios = model_stock_merge(base, states, self.config.ignore, self.config.ratio)
        except ValueError as exc:
            raise CheckpointError(f"{where}: {exc}") from None
        with torch.no_grad():
            model.load_state_dict(merged)
        return model

    @hookimpl
    def after_run(self, ctx: Any) -> dict[str, float]:
        """Summary of the per-tensor ratios; ``model_stock.json`` in the run directory lists them all."""
        if ctx.is_main_process:
            record = {"finetuned": self.files, "ratios": self.ratios}
            (ctx.run_dir / "model_stock.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        values = list(self.ratios.values())
        if not values:
            return {}
        return {"mean_ratio": sum(values) / len(values), "min_ratio": min(values), "max_ratio": max(values)}

    def state_dict(self) -> dict[str, Any]:
        return {"ratios": dict(self.ratios), "files": list(self.files)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ratios = {k: float(v) for k, v in state.get("ratios", {}).items()}
        self.files = list(state.get("files", []))
