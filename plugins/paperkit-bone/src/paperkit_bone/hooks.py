"""The Bone hooks: the shared adapter shell with Bone's layer (see :mod:`paperkit_bone.functional`)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from paperkit import AdapterMethod, PlanError, adapter_layers, write_peft
from paperkit_bone.functional import PEFT_INIT_WEIGHTS, BoneLinear, block_shape


class Bone(AdapterMethod):
    """Wraps the target layers in :class:`~paperkit_bone.functional.BoneLinear` (``B = 0``).

    Training, merging, saving and the frozen/trainable split are the shared
    :class:`paperkit.AdapterMethod`'s. ``B = 0`` gives ``ΔW = 0``, hence
    ``preserves_output``. ``after_run`` also writes the adapters in PEFT's
    MiSS format (``<run dir>/peft``, ``peft.PeftModel.from_pretrained``).
    """

    def make_layer(self, name: str, linear: nn.Linear) -> BoneLinear:
        c = self.config
        try:
            block_shape(c.structure, c.rank, linear.in_features, linear.out_features)
        except ValueError as error:
            raise PlanError(
                f"layer '{name}' ({linear.out_features}×{linear.in_features}): {error}; choose another rank or target",
                f"{self.where} rank",
            ) from None
        return BoneLinear(linear, c.rank, c.structure, c.dropout)

    def export(self, model: nn.Module, directory: Path) -> None:
        export_miss(model, directory, self.modules_to_save)


def export_miss(model: nn.Module, directory: str | Path, modules_to_save: list[str] | tuple[str, ...] = ()) -> Path | None:
    """Write the Bone adapters of ``model`` in PEFT's MiSS format; ``None`` where that format cannot say them.

    PEFT's format holds one ``r`` and one structure for every layer
    (``MissConfig.r``, ``init_weights``: ``"bat"`` for the affine structure,
    ``True`` for the shared one) and one dropout; tensors are named
    ``base_model.model.<layer>.miss_block``; ``modules_to_save`` are stored
    whole, as PEFT stores them. The adapters must not be merged.
    """
    every = list(adapter_layers(model))
    layers = [(name, layer) for name, layer in every if isinstance(layer, BoneLinear)]
    if not layers or len(layers) != len(every):
        return None
    kinds = {(layer.rank, layer.structure, float(getattr(layer.dropout, "p", 0.0))) for _n, layer in layers}
    if len(kinds) != 1 or any(layer.merged for _n, layer in layers):
        return None
    ((rank, structure, dropout),) = kinds
    tensors = {f"base_model.model.{name}.miss_block": layer.bone_block.detach().cpu() for name, layer in layers}
    for module_name in modules_to_save:
        for key, value in model.get_submodule(module_name).state_dict().items():
            tensors[f"base_model.model.{module_name}.{key}"] = value.detach().cpu()
    config = {
        "peft_type": "MISS",
        "r": rank,
        "init_weights": PEFT_INIT_WEIGHTS[structure],
        "miss_dropout": dropout,
        "mini_r": 1,
        "target_modules": [name for name, _layer in layers],
        "modules_to_save": list(modules_to_save) or None,
        "bias": "none",
        "inference_mode": True,
        "task_type": None,
        "base_model_name_or_path": None,
    }
    return write_peft(directory, config, tensors)
