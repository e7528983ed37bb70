"""The ``init`` hook: a thin shell over :func:`paperkit_maxout_init.functional.maxout_init_`."""

from __future__ import annotations

import json
from typing import Any

import attrs
from torch import nn

from paperkit import PluginError, hookimpl
from paperkit_maxout_init.functional import LayerRecord, largest_gaussian_moment, maxout_init_


class MaxoutInit:
    """Draws every chosen layer from the method's own generator (``ctx.generator("weights")``, run seed + key).

    What each layer received (shape, the rank of the maxout it feeds, c) is kept on
    ``self.layers`` and written to ``<run_dir>/maxout-init.json`` with each rank's ``M_K``
    and the forward factor ``c M_K`` it gives.
    """

    def __init__(self, config: Any) -> None:
        from paperkit_maxout_init import MaxoutInitConfig

        self.config = config if config is not None else MaxoutInitConfig()
        self.layers: list[LayerRecord] = []
        self.report: dict[str, Any] = {}

    @hookimpl
    def init(self, model: nn.Module, ctx: Any) -> None:
        c = self.config
        try:
            self.layers = maxout_init_(
                model,
                c=c.c,
                output_c=c.output_c,
                zero_bias=c.zero_bias,
                layers=c.layers,
                generator=ctx.generator("weights"),
            )
        except ValueError as exc:
            raise PluginError(f"maxout-init: {exc}") from None
        ranks = sorted({layer.rank for layer in self.layers if layer.rank is not None})
        moments = {k: largest_gaussian_moment(k) for k in ranks}
        self.report = {
            "c": "1/M_K" if c.c is None else c.c,
            "output_c": c.output_c,
            "ranks": {
                str(k): {"M_K": moments[k], "c": layer.c, "forward_factor": layer.c * moments[k]}
                for k in ranks
                for layer in self.layers
                if layer.rank == k
            },
            "layers": [attrs.asdict(layer) for layer in self.layers],
        }
        if ctx.is_main_process:
            ctx.run_dir.mkdir(parents=True, exist_ok=True)
            (ctx.run_dir / "maxout-init.json").write_text(json.dumps(self.report, indent=2), encoding="utf-8")
