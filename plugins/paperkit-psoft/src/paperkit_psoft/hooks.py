"""The PSOFT hooks: the shared adapter shell with PSOFT's layer (see :mod:`paperkit_psoft.functional`)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from paperkit import AdapterMethod, PlanError, adapter_layers, write_peft
from paperkit_psoft.functional import PEFT_INIT, PSOFTLinear


class PSOFT(AdapterMethod):
    """Wraps the target layers in :class:`~paperkit_psoft.functional.PSOFTLinear` (SVD of each base weight, ``R = I``).

    Training, merging, saving and the frozen/trainable split are the shared :class:`paperkit.AdapterMethod`'s.
    ``R = I`` gives ``ΔW = 0`` exactly, hence ``preserves_output``. ``after_run`` also writes the adapters in
    PEFT's PSOFT format (``<run dir>/peft``, ``peft.PeftModel.from_pretrained``).
    """

    def make_layer(self, name: str, linear: nn.Linear) -> PSOFTLinear:
        c = self.config
        if c.rank > min(linear.in_features, linear.out_features):
            raise PlanError(
                f"rank {c.rank} exceeds layer '{name}' ({linear.out_features}×{linear.in_features}); PSOFT rotates "
                "the top-r singular subspace, so r <= min(out, in): lower rank or narrow target",
                f"{self.where} rank",
            )
        return PSOFTLinear(
            linear, c.rank, alpha=c.alpha, dropout=c.dropout, init=c.init, orthogonal=c.orthogonal,
            scale_out=c.scale_out, scale_in=c.scale_in, neumann_terms=c.neumann_terms, neumann_eps=c.neumann_eps,
            niter=c.niter, seed=c.svd_seed,
        )

    def export(self, model: nn.Module, directory: Path) -> None:
        export_psoft(model, directory, self.modules_to_save)


def export_psoft(model: nn.Module, directory: str | Path, modules_to_save: list[str] | tuple[str, ...] = ()) -> Path | None:
    """Write the PSOFT adapters of ``model`` in PEFT's format; ``None`` where that format cannot say them.

    PEFT stores only ``R``'s tensors (``base_model.model.<layer>.psoft_R.{weight,vector_b,vector_a}``) and rebuilds
    ``A``, ``B`` from the base weights' SVD when it loads, so one ``PsoftConfig`` (rank, alpha, init, Cayley
    variant, SVD backend) must describe every layer; ``modules_to_save`` are stored whole, as PEFT stores them.
    The adapters must not be merged.
    """
    every = list(adapter_layers(model))
    layers = [(name, layer) for name, layer in every if isinstance(layer, PSOFTLinear)]
    if not layers or len(layers) != len(every) or any(layer.merged for _n, layer in layers):
        return None
    kinds = {
        (
            layer.rank, layer.alpha, layer.init, float(getattr(layer.dropout, "p", 0.0)), layer.psoft_R.orthogonal,
            layer.psoft_R.vector_b is not None, layer.psoft_R.vector_a is not None, layer.psoft_R.neumann_terms,
            layer.psoft_R.neumann_eps, layer.niter, layer.seed,
        )
        for _n, layer in layers
    }
    if len(kinds) != 1:
        return None
    ((rank, alpha, init, dropout, orthogonal, scale_out, scale_in, terms, eps, niter, seed),) = kinds
    tensors = {
        f"base_model.model.{name}.psoft_R.{key}": value.detach().cpu()
        for name, layer in layers
        for key, value in layer.psoft_R.named_parameters()
    }
    for module_name in modules_to_save:
        for key, value in model.get_submodule(module_name).state_dict().items():
            tensors[f"base_model.model.{module_name}.{key}"] = value.detach().cpu()
    config = {
        "peft_type": "PSOFT",
        "r": rank,
        "psoft_alpha": alpha,
        "psoft_dropout": dropout,
        "ab_svd_init": PEFT_INIT[init],
        "psoft_svd": "full" if niter is None else "lowrank",
        "psoft_svd_lowrank_niter": 10 if niter is None else niter,
        "random_seed": seed,
        "psoft_orth": orthogonal,
        "psoft_mag_b": scale_out,
        "psoft_mag_a": scale_in,
        "use_cayley_neumann": terms is not None,
        "num_cayley_neumann_terms": 5 if terms is None else terms,
        "cayley_neumann_eps": eps if terms is not None else None,
        "fan_in_fan_out": False,
        "init_weights": True,
        "target_modules": [name for name, _layer in layers],
        "modules_to_save": list(modules_to_save) or None,
        "inference_mode": True,
        "task_type": None,
        "base_model_name_or_path": None,
    }
    return write_peft(directory, config, tensors)
