"""The ``init`` hook: a thin shell over :func:`paperkit_s4d_init.functional.diagonal_init`."""

from __future__ import annotations

import json
from typing import Any

from torch import nn

from paperkit import PluginError, RunContext, hookimpl
from paperkit_s4d_init.functional import diagonal_init
from paperkit_s4d_init.layers import kernels


class S4dInit:
    """Re-draws every S4D kernel of the model (Δ, C, A) under the chosen scheme.

    Draws come from ``ctx.generator("ssm")`` in module order; what each kernel received (the
    scheme's diagnostics: for PTD κ(V), dropped modes) is kept on ``self.report`` and written to
    ``<run_dir>/s4d-init.json``. Every other parameter (encoder, D, output mixing, head) keeps the
    value the model was built with.
    """

    def __init__(self, config: Any) -> None:
        from paperkit_s4d_init import S4dInitConfig

        self.config = config if config is not None else S4dInitConfig()
        self.report: list[dict[str, Any]] = []

    @hookimpl
    def init(self, model: nn.Module, ctx: RunContext) -> None:
        c = self.config
        found = kernels(model)
        if not found:
            raise PluginError("s4d-init: the model has no S4D kernel to initialize; use [model] name = \"s4d\" "
                              "(or a model built from paperkit_s4d_init.layers.S4D)")
        generator = ctx.generator("ssm")
        self.report = []
        for name, kernel in found:
            init = diagonal_init(c.scheme, kernel.H, kernel.N, generator, c.dt_min, c.dt_max, c.real_random,
                                 c.real_scale, c.imag_scale, c.epsilon)
            kernel.load_init(init)
            self.report.append({"kernel": name, **init.info})
        if ctx.is_main_process:
            ctx.run_dir.mkdir(parents=True, exist_ok=True)
            (ctx.run_dir / "s4d-init.json").write_text(json.dumps(self.report, indent=2), encoding="utf-8")
