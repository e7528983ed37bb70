"""Low-rank adapters on ``nn.Linear`` layers: the machinery LoRA-family methods share.

A LoRA-family method (LoRA, PiSSA, and later papers that change how the
factors start or how they are trained) differs from the others in a few lines
of initialization; everything around those lines lives here:

``find_targets(model, patterns)``  which layers a plan's ``target`` names
``wrap(model, patterns, factory)`` replace each target by ``factory(name, linear)``
``LowRankLinear``                  ``y = base(x) + scaling · dropout(x) Aᵀ Bᵀ``
``mark_adapters_trainable``        freeze everything but the adapter factors
``merge_all`` / ``unmerge_all``    fold ``scaling · B A`` into the base weight and back (exactly)
``merge_and_unload``               plain ``nn.Linear`` layers again, with the update folded in
``adapter_state_dict`` / ``save_adapter`` / ``load_adapter``  the trainable factors on disk

Conventions follow Hugging Face PEFT's LoRA layer so that parity tests can
compare tensors one to one: ``A`` (``lora_A``) has shape ``(rank, in_features)``,
``B`` (``lora_B``) has shape ``(out_features, rank)``, ``scaling = alpha / rank``,
and adapter factors of a float16/bfloat16 layer are kept in float32 (PEFT's
``autocast_adapter_dtype``).

**Target patterns** are shell-style globs (``fnmatch``, case-sensitive) matched
against the full dotted module name, e.g. ``"blocks.*.linear1"`` or ``"head"``;
``*`` also crosses dots. The special pattern ``"all-linear"`` (PEFT's name)
selects every ``nn.Linear`` except a :class:`~paperkit.models.base.Classifier`'s
output layer ``head`` (PEFT excludes the classifier head the same way). Layers
inside ``nn.MultiheadAttention`` are never targets: that module reads its
``out_proj.weight`` directly, so a wrapper there would be silently bypassed.

**State dicts** of a wrapped layer hold ``base.weight``, ``base.bias``,
``lora_A`` and ``lora_B`` in the *unmerged* form whatever the merge state, so a
saved model always loads back into a freshly wrapped one. To hand the trained
model to code that expects the original architecture (``run.init_from`` of a
later run, a merge of several fine-tunes), call :func:`merge_and_unload`; the
built-in adapter methods do so in ``after_run``, so a run's
``model.safetensors`` fits the plan's model and ``adapter.safetensors`` keeps
the factors.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from paperkit.errors import PlanError
from paperkit.spec import hookimpl

#: PEFT's shorthand for "every linear layer but the output layer".
ALL_LINEAR = "all-linear"


class LowRankLinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: ``y = base(x) + scaling · dropout(x) Aᵀ Bᵀ``.

    The factors start at zero; a method initializes them (LoRA: Kaiming-uniform
    ``A`` and zero ``B``, :func:`init_lora_`; PiSSA: the principal singular
    triplets of the base weight). ``merge()`` adds ``scaling · B A`` to the base
    weight and keeps the unmerged weight, so ``unmerge()`` restores it bit for
    bit instead of subtracting (which would leave rounding error behind).
    """

    def __init__(self, base: nn.Linear, rank: int, scaling: float, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LowRankLinear wraps an nn.Linear, got {type(base).__name__}")
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        device, dtype = base.weight.device, adapter_dtype(base.weight.dtype)
        self.base = base
        self.lora_A = nn.Parameter(torch.zeros(rank, base.in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=device, dtype=dtype))
        self.scaling = float(scaling)
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self._unmerged_weight: torch.Tensor | None
        self.register_buffer("_unmerged_weight", None, persistent=False)
        for p in base.parameters():
            p.requires_grad_(False)
        self.register_state_dict_post_hook(_unmerged_state_dict)
        self.register_load_state_dict_pre_hook(_unmerge_before_load)

    @property
    def rank(self) -> int:
        return self.lora_A.shape[0]

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters this adapter trains, by attribute name (subclasses may add more)."""
        return {"lora_A": self.lora_A, "lora_B": self.lora_B}

    def delta_weight(self) -> torch.Tensor:
        """``scaling · B A`` in the base weight's dtype: what merging adds to the base weight."""
        return (self.scaling * (self.lora_B @ self.lora_A)).to(self.base.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.merged:
            return result
        h = self.dropout(x).to(self.lora_A.dtype)
        update = F.linear(F.linear(h, self.lora_A), self.lora_B) * self.scaling
        return result + update.to(result.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ``scaling · B A`` into the base weight; the forward then costs one matmul."""
        if self.merged:
            return
        self._unmerged_weight = self.base.weight.detach().clone()
        self.base.weight.add_(self.delta_weight())
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the base weight exactly as it was before :meth:`merge`."""
        if not self.merged:
            return
        assert self._unmerged_weight is not None
        self.base.weight.copy_(self._unmerged_weight)
        self._unmerged_weight = None
        self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scaling={self.scaling:g}, merged={self.merged}"


def _unmerged_state_dict(module: LowRankLinear, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """A merged layer saves its unmerged base weight, so every state dict has one meaning."""
    key = prefix + "base.weight"
    if module.merged and key in state_dict:
        state_dict[key] = module._unmerged_weight


def _unmerge_before_load(module: LowRankLinear, state_dict: dict, prefix: str, *args: object) -> None:
    """Loading replaces the unmerged tensors, so a merged layer unmerges first."""
    module.unmerge()


def adapter_dtype(dtype: torch.dtype) -> torch.dtype:
    """Factors of half-precision layers train in float32 (PEFT's ``autocast_adapter_dtype``)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def lora_scaling(alpha: float, rank: int) -> float:
    """``alpha / rank`` (Hu et al., 2021, Sec. 4.1; PEFT's ``scaling``)."""
    return alpha / rank


@torch.no_grad()
def init_lora_(layer: LowRankLinear) -> LowRankLinear:
    """LoRA's initialization: ``A`` Kaiming-uniform (``a = √5``, ``nn.Linear``'s default), ``B = 0``.

    Hu et al. (2021, Sec. 4.1) draw ``A`` at random and set ``B`` to zero so that
    ``B A = 0`` and the adapted model starts as the base model; the Kaiming-uniform
    draw is the reference code's (microsoft/LoRA ``loralib``) and PEFT's default.
    """
    nn.init.kaiming_uniform_(layer.lora_A, a=math.sqrt(5))
    nn.init.zeros_(layer.lora_B)
    return layer


# -- targeting ---------------------------------------------------------------------------
def linear_layers(model: nn.Module) -> list[str]:
    """Names of the ``nn.Linear`` layers an adapter may wrap, in module order."""
    inside_attention = {
        f"{name}.{child}" if name else child
        for name, module in model.named_modules()
        if isinstance(module, nn.MultiheadAttention)
        for child, _ in module.named_modules()
        if child
    }
    adapter_bases = {f"{name}.base" for name, module in model.named_modules() if isinstance(module, LowRankLinear)}
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name not in inside_attention and name not in adapter_bases
    ]


def find_targets(model: nn.Module, patterns: Iterable[str], where: str = "target") -> list[str]:
    """The linear layers matching any of ``patterns`` (globs or ``"all-linear"``), in module order.

    A pattern that matches nothing is an error (a typo would otherwise train no
    adapter at all); the message lists the layers there are.
    """
    patterns = list(patterns)
    if not patterns:
        raise PlanError('no target layers given; name some, e.g. target = ["all-linear"]', where)
    layers = linear_layers(model)
    output_layer = _output_layer(model)
    chosen: set[str] = set()
    for pattern in patterns:
        if pattern == ALL_LINEAR:
            hits = [n for n in layers if n != output_layer]
        else:
            hits = [n for n in layers if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise PlanError(
                f"pattern '{pattern}' matches no linear layer (layers: {', '.join(layers) or 'none'})", where
            )
        chosen.update(hits)
    return [n for n in layers if n in chosen]


def _output_layer(model: nn.Module) -> str | None:
    from paperkit.models.base import Classifier

    return "head" if isinstance(model, Classifier) and isinstance(getattr(model, "head", None), nn.Linear) else None


def wrap(
    model: nn.Module,
    patterns: Iterable[str],
    factory: Callable[[str, nn.Linear], nn.Module],
    where: str = "target",
) -> dict[str, nn.Module]:
    """Replace every target layer by ``factory(name, layer)`` in place; ``{name: wrapper}``."""
    wrapped: dict[str, nn.Module] = {}
    for name in find_targets(model, patterns, where):
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        wrapped[name] = factory(name, getattr(parent, attr))
        setattr(parent, attr, wrapped[name])
    return wrapped


#: The public name of :func:`wrap` (``paperkit.wrap_low_rank``): any layer wrapper, not only low-rank ones.
wrap_low_rank = wrap


# -- the adapted model -------------------------------------------------------------------
def adapter_layers(model: nn.Module) -> Iterator[tuple[str, LowRankLinear]]:
    """Every :class:`LowRankLinear` of ``model`` with its name."""
    for name, module in model.named_modules():
        if isinstance(module, LowRankLinear):
            yield name, module


def mark_adapters_trainable(model: nn.Module) -> int:
    """Freeze every parameter except the adapters' own; returns the number of trainable values.

    LoRA and PiSSA train only the factors: base weights, biases, normalization
    and unwrapped layers stay frozen (PEFT's ``bias="none"``).
    """
    for p in model.parameters():
        p.requires_grad_(False)
    count = 0
    for _name, layer in adapter_layers(model):
        for p in layer.adapter_parameters().values():
            p.requires_grad_(True)
            count += p.numel()
    return count


def merge_all(model: nn.Module) -> None:
    for _name, layer in adapter_layers(model):
        layer.merge()


def unmerge_all(model: nn.Module) -> None:
    for _name, layer in adapter_layers(model):
        layer.unmerge()


@torch.no_grad()
def merge_and_unload(model: nn.Module) -> nn.Module:
    """Replace every adapter by its base ``nn.Linear`` with the update folded in; returns ``model``.

    Afterwards the model has the architecture the plan built, so its state dict
    loads with ``run.init_from``. The restored layers' parameters stay frozen.
    """
    for name, layer in list(adapter_layers(model)):
        layer.merge()
        base = layer.base
        layer._unmerged_weight = None
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, base)
    return model


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' trainable tensors by full name (``blocks.0.linear1.lora_A``), detached on the CPU."""
    out = {}
    for name, layer in adapter_layers(model):
        for attr, p in layer.adapter_parameters().items():
            out[f"{name}.{attr}" if name else attr] = p.detach().cpu().contiguous()
    return out


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """Write the adapter tensors (and each layer's rank and scaling as metadata) to a safetensors file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {name: {"rank": layer.rank, "scaling": layer.scaling} for name, layer in adapter_layers(model)}
    save_file(adapter_state_dict(model), str(path), metadata={"paperkit.adapters": json.dumps(meta)})
    return path


@torch.no_grad()
def load_adapter(model: nn.Module, path: str | Path) -> None:
    """Load adapter tensors written by :func:`save_adapter` into an identically wrapped model."""
    from paperkit.errors import CheckpointError
    from paperkit.weights import read_weights

    state = read_weights(path)
    own = adapter_state_dict(model)
    if set(state) != set(own):
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        what = f"missing '{missing[0]}'" if missing else f"unexpected '{extra[0]}'"
        raise CheckpointError(f"{path}: does not fit this model's adapters ({what})")
    for name, layer in adapter_layers(model):
        layer.unmerge()
        for attr, p in layer.adapter_parameters().items():
            value = state[f"{name}.{attr}" if name else attr]
            if value.shape != p.shape:
                raise CheckpointError(
                    f"{path}: '{name}.{attr}' has shape {tuple(value.shape)}, the adapter expects {tuple(p.shape)}"
                )
            p.copy_(value)


def export_peft(model: nn.Module, directory: str | Path, modules_to_save: tuple[str, ...] | list[str] = ()) -> Path:
    """Write the low-rank adapters in PEFT's on-disk format (``adapter_config.json`` and
    ``adapter_model.safetensors``), so ``peft.PeftModel.from_pretrained(base, directory)`` rebuilds the adapted
    model on the same base weights; ``modules_to_save`` (a trained head) are stored whole, as PEFT stores them.

    Every adapter must share one rank and one scaling (PEFT's ``r`` and ``lora_alpha = scaling · r``); the
    adapters must not be merged.
    """
    from safetensors.torch import save_file

    layers = list(adapter_layers(model))
    if not layers:
        raise ValueError("the model has no low-rank adapters to export")
    shapes = {(layer.rank, layer.scaling) for _name, layer in layers}
    if len(shapes) != 1:
        raise ValueError(f"PEFT's format needs one rank and scaling for every adapter, found {sorted(shapes)}")
    if any(layer.merged for _name, layer in layers):
        raise ValueError("unmerge the adapters before exporting them")
    ((rank, scaling),) = shapes
    tensors = {}
    for name, layer in layers:
        tensors[f"base_model.model.{name}.lora_A.weight"] = layer.lora_A.detach().contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = layer.lora_B.detach().contiguous()
    for module_name in modules_to_save:
        for pname, value in model.get_submodule(module_name).state_dict().items():
            tensors[f"base_model.model.{module_name}.{pname}"] = value.detach().contiguous()
    dropout = next((getattr(layer.dropout, "p", 0.0) for _n, layer in layers if hasattr(layer, "dropout")), 0.0)
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": scaling * rank,
        "lora_dropout": float(dropout),
        "target_modules": [name for name, _layer in layers],
        "modules_to_save": list(modules_to_save) or None,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "task_type": None,
        "base_model_name_or_path": None,
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    return directory


# -- the hook shell LoRA-family methods share --------------------------------------------
class LowRankAdapterMethod:
    """The hooks of a LoRA-family method; a paper subclasses it and writes :meth:`initialize`.

    The config must have ``rank``, ``alpha``, ``dropout`` and ``target``. ``adapt``
    wraps the target layers in :class:`LowRankLinear` (``scaling = alpha / rank``;
    ``alpha = None`` means ``alpha = rank``, a scaling of 1),
    lets :meth:`initialize` set the factors and freezes everything else.
    ``after_run`` writes ``adapter.safetensors`` into the run directory and
    merges and unloads the adapters, so the run's ``model.safetensors`` fits
    the plan's model. ``merge``, ``unmerge``, ``adapter_parameters`` and
    ``preserves_output`` are what :class:`paperkit.testing.ConformanceSuite`
    checks for ``adapt``.
    """

    #: The adapted model computes what the base model computed, before training.
    preserves_output = True

    def __init__(self, config: object) -> None:
        self.config = config
        self.trainable = 0
        self.layers: list[str] = []
        #: ``"<plan file>: [adapt]"``, for error messages raised while wrapping
        self.where = "[adapt]"

    def initialize(self, name: str, layer: LowRankLinear) -> None:  # pragma: no cover - abstract
        """Set ``layer.lora_A``, ``layer.lora_B`` (and the base weight, if the method changes it)."""
        raise NotImplementedError

    def make_layer(self, name: str, linear: nn.Linear) -> LowRankLinear:
        c = self.config
        alpha = c.rank if getattr(c, "alpha", None) is None else c.alpha  # type: ignore[attr-defined]
        layer = LowRankLinear(linear, c.rank, lora_scaling(alpha, c.rank), c.dropout)  # type: ignore[attr-defined]
        self.initialize(name, layer)
        return layer

    @property
    def modules_to_save(self) -> list[str]:
        """Modules that train whole beside the adapters (a new classifier head), PEFT's ``modules_to_save``."""
        return list(getattr(self.config, "modules_to_save", None) or [])

    @hookimpl
    def adapt(self, model: nn.Module, ctx: object) -> nn.Module:
        self.where = f"{getattr(getattr(ctx, 'plan', None), 'path', 'plan')}: [adapt]"
        self.layers = list(wrap(model, self.config.target, self.make_layer, f"{self.where} target"))  # type: ignore[attr-defined]
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
    def after_run(self, model: nn.Module, ctx: object) -> dict[str, float]:
        inner = ctx.accelerator.unwrap_model(model)  # type: ignore[attr-defined]
        if ctx.is_main_process:  # type: ignore[attr-defined]
            save_adapter(inner, Path(ctx.run_dir) / "adapter.safetensors")  # type: ignore[attr-defined]
            try:  # the same adapters for PEFT users (peft.PeftModel.from_pretrained(base, run_dir / "peft"))
                export_peft(inner, Path(ctx.run_dir) / "peft", self.modules_to_save)  # type: ignore[attr-defined]
            except ValueError:  # mixed ranks or scalings: PEFT's format cannot say so; adapter.safetensors can
                pass
        merge_and_unload(inner)
        return {"trainable_parameters": float(self.trainable), "adapted_layers": float(len(self.layers))}

    def merge(self, model: nn.Module) -> nn.Module:
        merge_all(model)
        return model

    def unmerge(self, model: nn.Module) -> nn.Module:
        unmerge_all(model)
        return model

    def adapter_parameters(self, model: nn.Module) -> list[str]:
        """Full names of the parameters that train (the factors of every adapter, and ``modules_to_save``)."""
        factors = [
            f"{name}.{attr}" if name else attr
            for name, layer in adapter_layers(model)
            for attr in layer.adapter_parameters()
        ]
        whole = [f"{m}.{p}" for m in self.modules_to_save for p, _v in model.get_submodule(m).named_parameters()]
        return factors + whole
