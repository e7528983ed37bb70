"""The SVFT hooks: the shared adapter shell with SVFT's layer (see :mod:`paperkit_svft.functional`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from paperkit import AdapterMethod, PlanError
from paperkit_svft.functional import SvftLinear, coefficient_count


class Svft(AdapterMethod):
    """Wraps the target layers in :class:`~paperkit_svft.functional.SvftLinear`.

    Training, merging, saving and the frozen/trainable split are the shared
    :class:`paperkit.AdapterMethod`'s. The random pattern and the Kaiming draw
    of the coefficients come from the method's own generator
    (``ctx.generator("init")``, seeded from the run seed). The adapted model
    starts at the base model only with ``init = "zeros"`` (``M = 0``): the
    reference's Kaiming draw perturbs it, hence ``preserves_output`` follows the
    config. PEFT has no SVFT, so nothing is exported in its format;
    ``adapter.safetensors`` holds ``S`` and the gates (the pattern of a
    ``random`` run lives in the model's state dict, ``svft_rows``/``svft_cols``).
    """

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.preserves_output = config.init == "zeros"
        self.generator = None

    def prepare(self, model: nn.Module, ctx: Any) -> None:
        self.generator = ctx.generator("init")

    def make_layer(self, name: str, linear: nn.Linear) -> SvftLinear:
        c = self.config
        n = min(linear.in_features, linear.out_features, c.rank or linear.in_features)
        try:
            coefficient_count(n, c.off_diag)
            return SvftLinear(linear, c.pattern, c.off_diag, c.rank, c.init, c.gate, self.generator)
        except ValueError as error:
            raise PlanError(
                f"layer '{name}' ({linear.out_features}×{linear.in_features}, n = {n}): {error}",
                f"{self.where} off_diag",
            ) from None
