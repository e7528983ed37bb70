"""The ``init`` hook: a thin shell over :func:`paperkit_idinit.functional.idinit_`."""

from __future__ import annotations

import json
from typing import Any

from torch import nn

from paperkit import PluginError, hookimpl
from paperkit_idinit.functional import DEFAULT_RESIDUAL_ENDS, idinit_, unmatched_patterns


class IDInit:
    """Applies IDInit to every layer; ``self.layers`` records what each layer received.

    The record is also written to ``<run_dir>/idinit.json``. Randomness is drawn only
    for the "loose" condition (``loose > 0``), from ``ctx.generator("loose")``.
    """

    def __init__(self, config: Any) -> None:
        from paperkit_idinit import IDInitConfig

        self.config = config if config is not None else IDInitConfig()
        self.layers: dict[str, str] = {}

    @hookimpl
    def init(self, model: nn.Module, ctx: Any) -> None:
        c = self.config
        patterns = list(c.residual_ends)
        # The default names the embedded models' residual ends and may match nothing (a plain
        # mlp, the cnn); patterns a user wrote must name a layer, or a typo would go unnoticed.
        missing = [] if tuple(patterns) == DEFAULT_RESIDUAL_ENDS else unmatched_patterns(model, patterns)
        if missing:
            raise PluginError(f"idinit: residual_ends pattern(s) {', '.join(map(repr, missing))} match no Linear or convolution of the model")
        generator = ctx.generator("loose") if c.loose > 0 else None
        try:
            self.layers = idinit_(model, patterns, tau=c.tau, eps=c.eps, conv=c.conv, loose=c.loose, generator=generator)
        except ValueError as exc:
            raise PluginError(f"idinit: {exc}") from None
        if ctx.is_main_process:
            ctx.run_dir.mkdir(parents=True, exist_ok=True)
            report = {"tau": c.tau, "eps": c.eps, "conv": c.conv, "loose": c.loose, "layers": self.layers}
            (ctx.run_dir / "idinit.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
