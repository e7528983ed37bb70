"""Adapters: frozen linear layers whose weights a method re-parameterizes, and the machinery around them.

An adapter method (LoRA, PiSSA, and the papers that change how an update is
parameterized, started or trained) differs from the others in its layer's
formula and initialization; everything around those lives here:

``layers``   :class:`AdaptedLinear` (``W' = W0 + ΔW(θ)`` or ``W' = f(W0, θ)``) and
             :class:`LowRankLinear` (``y = base(x) + scaling · dropout(x) Aᵀ Bᵀ``)
``targets``  which layers a plan's ``target`` names; :func:`wrap` replaces them
``model``    the adapted model: its adapter layers, modules shared by several layers
             (:func:`shared_module`), freezing, merging (exact), unloading, adapter files
``peft``     PEFT's on-disk format (:func:`export_peft` for LoRA, :func:`write_peft` for any)
``method``   the hook shells: :class:`AdapterMethod` and :class:`LowRankAdapterMethod`

Conventions follow Hugging Face PEFT so that parity tests compare tensors one
to one (LoRA: ``lora_A`` is ``(rank, in)``, ``lora_B`` is ``(out, rank)``,
``scaling = alpha / rank``; adapter parameters of float16/bfloat16 layers are
float32).

**State dicts** of a wrapped layer hold ``base.weight``, ``base.bias`` and the
adapter's parameters in the *unmerged* form whatever the merge state, so a
saved model always loads back into a freshly wrapped one. To hand the trained
model to code that expects the original architecture (``run.init_from`` of a
later run, a merge of several fine-tunes), call :func:`merge_and_unload`; the
engine does so after every method's ``after_run``, so a run's
``model.safetensors`` fits the plan's model and ``adapter.safetensors`` keeps
the adapters.
"""

from paperkit.adapters.layers import AdaptedLinear, LowRankLinear, adapter_dtype, init_lora_, lora_scaling
from paperkit.adapters.method import AdapterMethod, LowRankAdapterMethod
from paperkit.adapters.model import (
    SHARED,
    adapter_layers,
    adapter_parameter_items,
    adapter_state_dict,
    load_adapter,
    mark_adapters_trainable,
    merge_all,
    merge_and_unload,
    save_adapter,
    shared_module,
    unmerge_all,
)
from paperkit.adapters.peft import export_peft, modules_to_save_tensors, write_peft
from paperkit.adapters.targets import ALL_LINEAR, find_targets, linear_layers, wrap, wrap_low_rank

__all__ = [
    "ALL_LINEAR",
    "SHARED",
    "AdaptedLinear",
    "AdapterMethod",
    "LowRankAdapterMethod",
    "LowRankLinear",
    "adapter_dtype",
    "adapter_layers",
    "adapter_parameter_items",
    "adapter_state_dict",
    "export_peft",
    "find_targets",
    "init_lora_",
    "linear_layers",
    "load_adapter",
    "lora_scaling",
    "mark_adapters_trainable",
    "merge_all",
    "merge_and_unload",
    "modules_to_save_tensors",
    "save_adapter",
    "shared_module",
    "unmerge_all",
    "wrap",
    "wrap_low_rank",
    "write_peft",
]
