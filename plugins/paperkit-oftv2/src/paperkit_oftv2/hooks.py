"""The OFTv2 hooks: the shared adapter shell with OFT's layer (see :mod:`paperkit_oftv2.functional`)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from paperkit import AdapterMethod, PlanError, adapter_layers, write_peft
from paperkit_oftv2.functional import OFTLinear, check_block_size


class OFTv2(AdapterMethod):
    """Wraps the target layers in :class:`~paperkit_oftv2.functional.OFTLinear` (``θ = 0``, ``R = I``).

    Training, merging, saving and the frozen/trainable split are the shared
    :class:`paperkit.AdapterMethod`'s. ``R = I`` at the start, hence
    ``preserves_output``. ``after_run`` also writes the adapters in PEFT's
    OFT format (``<run dir>/peft``, ``peft.PeftModel.from_pretrained``).
    """

    def make_layer(self, name: str, linear: nn.Linear) -> OFTLinear:
        c = self.config
        try:
            check_block_size(c.block_size, linear.in_features)
        except ValueError as error:
            raise PlanError(
                f"layer '{name}' ({linear.out_features}×{linear.in_features}): {error}; choose another block_size or "
                "target",
                f"{self.where} block_size",
            ) from None
        return OFTLinear(linear, c.block_size, c.neumann, c.terms, c.block_share, c.form)

    def export(self, model: nn.Module, directory: Path) -> None:
        export_oft(model, directory, self.modules_to_save)


def _peft_version() -> str:
    """The installed PEFT's version (PEFT warns on Cayley–Neumann adapters written before 0.18.0)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("peft")
    except PackageNotFoundError:
        return "0.18.0"


def export_oft(model: nn.Module, directory: str | Path, modules_to_save: list[str] | tuple[str, ...] = ()) -> Path | None:
    """Write the OFT adapters of ``model`` in PEFT's OFT format; ``None`` where that format cannot say them.

    PEFT's format holds one block size, one parameterization and one
    ``block_share`` for every layer; tensors are named
    ``base_model.model.<layer>.oft_R.weight`` (``θ``, ``(r, b(b−1)/2)``);
    ``modules_to_save`` are stored whole. The adapters must not be merged.
    """
    every = list(adapter_layers(model))
    layers = [(name, layer) for name, layer in every if isinstance(layer, OFTLinear)]
    if not layers or len(layers) != len(every):
        return None
    kinds = {(layer.block_size, layer.neumann, layer.terms, layer.block_share) for _n, layer in layers}
    if len(kinds) != 1 or any(layer.merged for _n, layer in layers):
        return None
    ((block_size, neumann, terms, block_share),) = kinds
    tensors = {f"base_model.model.{name}.oft_R.weight": layer.oft_R.detach().cpu() for name, layer in layers}
    for module_name in modules_to_save:
        for key, value in model.get_submodule(module_name).state_dict().items():
            tensors[f"base_model.model.{module_name}.{key}"] = value.detach().cpu()
    config = {
        "peft_type": "OFT",
        "peft_version": _peft_version(),
        "r": 0,
        "oft_block_size": block_size,
        "use_cayley_neumann": neumann,
        "num_cayley_neumann_terms": terms,
        "block_share": block_share,
        "coft": False,
        "eps": 6e-05,
        "module_dropout": 0.0,
        "init_weights": True,
        "target_modules": [name for name, _layer in layers],
        "modules_to_save": list(modules_to_save) or None,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "task_type": None,
        "base_model_name_or_path": None,
    }
    return write_peft(directory, config, tensors)
