"""The LoCA hooks: the shared adapter shell with LoCA's layer, plus the alternating schedule of Sec. 4.4."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from torch import nn

from paperkit import AdapterMethod, Optimization, PlanError, adapter_layers, hookimpl, write_peft
from paperkit_loca.functional import LocaLinear, phase, random_locations

#: PEFT FourierFT's default random_loc_seed (used where a plan sets none and no run seed is known).
PEFT_SEED = 777


class Loca(AdapterMethod):
    """Wraps the target layers in :class:`~paperkit_loca.functional.LocaLinear` (coefficients 0: the base model).

    ``optimize`` contributes the schedule: at each step a ``grad_transform``
    drops the gradients of the parameters that do not train in this phase
    (:func:`~paperkit_loca.functional.phase`), so the optimizer skips them as the
    authors' ``requires_grad`` switches do, and a ``param_rule`` gives the
    locations their own learning rate and no weight decay. ``after_run`` also
    writes PEFT's FourierFT format where it can say the adapters
    (``transform = "dft"``, fixed locations, a PEFT seed).
    """

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.seed = PEFT_SEED

    def prepare(self, model: nn.Module, ctx: Any) -> None:
        chosen = self.config.location_seed
        # None: one draw per run seed (crc32 keeps it stable across processes and Python runs)
        self.seed = int(chosen) if chosen is not None else zlib.crc32(f"loca:{getattr(ctx, 'seed', 0)}".encode())

    def make_layer(self, name: str, linear: nn.Linear) -> LocaLinear:
        c = self.config
        size = linear.out_features * linear.in_features
        if c.n_frequency > size:
            raise PlanError(
                f"layer '{name}' ({linear.out_features}×{linear.in_features}) has {size} spectrum entries, fewer than "
                f"n_frequency = {c.n_frequency}; lower n_frequency or choose other targets",
                f"{self.where} n_frequency",
            )
        indices = random_locations(c.n_frequency, linear.out_features, linear.in_features, self.seed)
        return LocaLinear(linear, indices, c.scale, c.transform, c.locations)

    @hookimpl
    def optimize(self, model: nn.Module, ctx: Any) -> Optimization | None:
        c = self.config
        if c.locations != "dynamic":
            return None

        def drop_inactive(model: nn.Module) -> None:
            training = phase(ctx.step, c.coefficient_steps, c.location_steps, c.location_until)
            frozen = "loca_spectrum" if training == "locations" else "loca_locations"
            for _name, layer in adapter_layers(model):
                p = getattr(layer, frozen, None)
                if isinstance(p, nn.Parameter):
                    p.grad = None

        def rule(name: str, parameter: nn.Parameter) -> dict[str, float]:
            if name.endswith("loca_locations"):
                return {"lr": c.location_lr, "weight_decay": 0.0}
            return {}

        return Optimization(grad_transform=drop_inactive, param_rule=rule)

    def export(self, model: nn.Module, directory: Path) -> None:
        export_fourierft(model, directory, self.modules_to_save, self.seed)


def export_fourierft(
    model: nn.Module, directory: str | Path, modules_to_save: list[str] | tuple[str, ...] = (), seed: int = PEFT_SEED
) -> Path | None:
    """Write the adapters of ``model`` in PEFT's FourierFT format; ``None`` where that format cannot say them.

    PEFT stores only the coefficients (``base_model.model.<layer>.fourierft_spectrum``) and re-draws the locations
    from ``random_loc_seed``, so it can hold exactly the ``"dft"`` transform with fixed locations drawn from
    ``seed`` (one ``n_frequency`` and one ``scaling`` for all layers); ``modules_to_save`` are stored whole.
    """
    every = list(adapter_layers(model))
    layers = [(name, layer) for name, layer in every if isinstance(layer, LocaLinear)]
    if not layers or len(layers) != len(every) or any(layer.merged for _n, layer in layers):
        return None
    kinds = {(layer.transform, layer.locations, layer.n_frequency, layer.scale) for _n, layer in layers}
    if len(kinds) != 1:
        return None
    ((transform, locations, n, scale),) = kinds
    if transform != "dft" or locations != "fixed":
        return None
    for _name, layer in layers:
        expected = random_locations(n, layer.out_features, layer.in_features, seed).to(layer.loca_indices.device)
        if not bool((layer.loca_indices == expected).all()):
            return None
    tensors = {f"base_model.model.{name}.fourierft_spectrum": layer.loca_spectrum.detach().cpu() for name, layer in layers}
    for module_name in modules_to_save:
        for key, value in model.get_submodule(module_name).state_dict().items():
            tensors[f"base_model.model.{module_name}.{key}"] = value.detach().cpu()
    config = {
        "peft_type": "FOURIERFT",
        "n_frequency": n,
        "scaling": scale,
        "random_loc_seed": seed,
        "init_weights": True,
        "fan_in_fan_out": False,
        "target_modules": [name for name, _layer in layers],
        "modules_to_save": list(modules_to_save) or None,
        "bias": "none",
        "inference_mode": True,
        "task_type": None,
        "base_model_name_or_path": None,
    }
    return write_peft(directory, config, tensors)
