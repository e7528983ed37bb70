"""The hook shells adapter methods share: a paper writes how its layers start, the shell does the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from paperkit.adapters.layers import AdaptedLinear, LowRankLinear, lora_scaling
from paperkit.adapters.model import (
    adapter_parameter_items,
    mark_adapters_trainable,
    merge_all,
    save_adapter,
    unmerge_all,
)
from paperkit.adapters.peft import export_peft
from paperkit.adapters.targets import wrap
from paperkit.errors import PlanError
from paperkit.spec import hookimpl


class AdapterMethod:
    """The hooks of an adapter method; a paper subclasses it and writes :meth:`make_layer`.

    The config must have ``target`` (patterns, see :mod:`paperkit.adapters.targets`)
    and may have ``modules_to_save`` (modules that train whole, e.g. a new
    head). ``adapt`` calls :meth:`prepare` (a look at the unadapted model or the
    data, before anything is wrapped), wraps every target layer in what
    :meth:`make_layer` returns, and freezes everything but the adapters.
    ``after_run`` writes ``adapter.safetensors`` (and, where :meth:`export`
    knows a PEFT format, ``peft/``); the engine folds the adapters into plain
    layers after every method's ``after_run``, so diagnostics still see the
    adapted model and the run's ``model.safetensors`` fits the plan's model.
    ``merge``, ``unmerge``, ``adapter_parameters`` and ``preserves_output``
    are what :class:`paperkit.testing.ConformanceSuite` checks for ``adapt``.
    """

    #: The adapted model computes what the base model computed, before training.
    preserves_output = True

    def __init__(self, config: object) -> None:
        self.config = config
        self.trainable = 0
        self.layers: list[str] = []
        #: ``"<plan file>: [adapt]"``, for error messages raised while wrapping
        self.where = "[adapt]"
        #: the model being adapted, while ``adapt`` runs (for :func:`paperkit.adapters.shared_module`)
        self.model: nn.Module | None = None

    def prepare(self, model: nn.Module, ctx: Any) -> None:
        """Look at the unadapted model (or at data, ``ctx.batch_sampler``) before any layer is wrapped."""

    def make_layer(self, name: str, linear: nn.Linear) -> AdaptedLinear:  # pragma: no cover - abstract
        """The adapter layer that replaces target ``name``, initialized."""
        raise NotImplementedError

    def export(self, model: nn.Module, directory: Path) -> None:
        """Write the adapters in PEFT's format into ``directory`` where PEFT has one (the default: nothing)."""

    @property
    def modules_to_save(self) -> list[str]:
        """Modules that train whole beside the adapters (a new classifier head), PEFT's ``modules_to_save``."""
        return list(getattr(self.config, "modules_to_save", None) or [])

    @hookimpl
    def adapt(self, model: nn.Module, ctx: Any) -> nn.Module:
        self.where = f"{getattr(getattr(ctx, 'plan', None), 'path', 'plan')}: [adapt]"
        self.model = model
        try:
            self.prepare(model, ctx)
            self.layers = list(wrap(model, self.config.target, self.make_layer, f"{self.where} target"))  # type: ignore[attr-defined]
        finally:
            self.model = None
        self.trainable = mark_adapters_trainable(model)
        for name in self.modules_to_save:
            try:
                module = model.get_submodule(name)
            except AttributeError:
                raise PlanError(f"the model has no module '{name}' to train", f"{self.where} modules_to_save") from None
            module.requires_grad_(True)
            self.trainable += sum(p.numel() for p in module.parameters())
        return model

    @hookimpl
    def after_run(self, model: nn.Module, ctx: Any) -> dict[str, float]:
        inner = ctx.accelerator.unwrap_model(model)
        if ctx.is_main_process:
            save_adapter(inner, Path(ctx.run_dir) / "adapter.safetensors")
            self.export(inner, Path(ctx.run_dir) / "peft")
        return {"trainable_parameters": float(self.trainable), "adapted_layers": float(len(self.layers))}

    def merge(self, model: nn.Module) -> nn.Module:
        merge_all(model)
        return model

    def unmerge(self, model: nn.Module) -> nn.Module:
        unmerge_all(model)
        return model

    def adapter_parameters(self, model: nn.Module) -> list[str]:
        """Full names of the parameters that train (every adapter's, the shared bank's, ``modules_to_save``)."""
        own = [name for name, _p in adapter_parameter_items(model)]
        whole = [f"{m}.{p}" for m in self.modules_to_save for p, _v in model.get_submodule(m).named_parameters()]
        return own + whole


class LowRankAdapterMethod(AdapterMethod):
    """The hooks of a LoRA-family method; a paper subclasses it and writes :meth:`initialize`.

    The config must have ``rank``, ``alpha``, ``dropout`` and ``target``. Every
    target becomes a :class:`LowRankLinear` (``scaling = alpha / rank``;
    ``alpha = None`` means ``alpha = rank``, a scaling of 1) whose factors
    :meth:`initialize` sets; the run's adapters are also exported for PEFT
    (``peft.PeftModel.from_pretrained(base, run_dir / "peft")``).
    """

    def initialize(self, name: str, layer: LowRankLinear) -> None:  # pragma: no cover - abstract
        """Set ``layer.lora_A``, ``layer.lora_B`` (and the base weight, if the method changes it)."""
        raise NotImplementedError

    def make_layer(self, name: str, linear: nn.Linear) -> LowRankLinear:
        c = self.config
        alpha = c.rank if getattr(c, "alpha", None) is None else c.alpha  # type: ignore[attr-defined]
        layer = LowRankLinear(linear, c.rank, lora_scaling(alpha, c.rank), c.dropout)  # type: ignore[attr-defined]
        self.initialize(name, layer)
        return layer

    def export(self, model: nn.Module, directory: Path) -> None:
        try:
            export_peft(model, directory, self.modules_to_save)
        except ValueError:  # mixed ranks or scalings: PEFT's format cannot say so; adapter.safetensors can
            pass
