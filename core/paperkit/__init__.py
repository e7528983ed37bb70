"""paperkit: machine-learning papers as plugins that compose.

This module is the public plugin API: everything a plugin needs is importable
from ``paperkit`` and nothing deeper (a test fails when a bundled plugin imports
another core module; ``paperkit.testing`` is the test kit, public too). The
reference is ``docs/api.md``, generated from the docstrings of :data:`__all__`.

It is imported by every command, including ``paperkit --help`` and ``paperkit
plugins``, so it must stay free of torch: the records a plugin needs to
*describe* itself (``Method``, ``Paper``, ``Claim``, ``option``, ``hookimpl``)
are plain imports; the runtime names (``RunContext``, ``Batch``, ``forward``,
adapters, buffers, weights I/O) load on first access (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from paperkit.errors import CheckpointError, PaperkitError, PlanError, PluginError

__version__ = "0.1.0"

#: Runtime names and the module that defines each; imported on first access so that
#: ``import paperkit`` never imports torch.
_LAZY: dict[str, str] = {
    # the records a plugin describes itself with (no torch; attrs and pluggy load on first use, so that
    # ``paperkit --help`` pays for neither)
    "API_VERSION": "paperkit.spec",
    "BATCH_KEYS": "paperkit.spec",
    "HOOKS": "paperkit.spec",
    "SECTION_HOOKS": "paperkit.spec",
    "Claim": "paperkit.spec",
    "Method": "paperkit.spec",
    "ModelSpec": "paperkit.spec",
    "Paper": "paperkit.spec",
    "TaskSpec": "paperkit.spec",
    "hookimpl": "paperkit.spec",
    "option": "paperkit.spec",
    # what hooks receive
    "RunContext": "paperkit.context",
    "Batch": "paperkit.context",
    "Outputs": "paperkit.context",
    "Optimization": "paperkit.context",
    "EvalSet": "paperkit.context",
    # tasks and models
    "Task": "paperkit.tasks.base",
    "TaskInfo": "paperkit.tasks.base",
    "Experience": "paperkit.tasks.base",
    "IndexedDataset": "paperkit.tasks.base",
    "load_task": "paperkit.tasks.loading",
    "Classifier": "paperkit.models.base",
    "MLP": "paperkit.models.mlp",
    "Maxout": "paperkit.models.mlp",
    "CNN": "paperkit.models.cnn",
    "MiniLM": "paperkit.models.minilm",
    "load_minilm": "paperkit.models.minilm",
    # the training step's building blocks
    "forward": "paperkit.step",
    "unwrapped": "paperkit.step",
    "trainable": "paperkit.step",
    "per_sample_targets": "paperkit.step",
    "weighted_mean": "paperkit.step",
    # shared method machinery
    "ReservoirBuffer": "paperkit.builtin.reservoir",
    "Replay": "paperkit.builtin.reservoir",
    "join_replay": "paperkit.builtin.reservoir",
    "AdaptedLinear": "paperkit.adapters",
    "AdapterMethod": "paperkit.adapters",
    "LowRankLinear": "paperkit.adapters",
    "LowRankAdapterMethod": "paperkit.adapters",
    "init_lora_": "paperkit.adapters",
    "lora_scaling": "paperkit.adapters",
    "wrap_low_rank": "paperkit.adapters",
    "adapter_layers": "paperkit.adapters",
    "merge_and_unload": "paperkit.adapters",
    "export_peft": "paperkit.adapters",
    "write_peft": "paperkit.adapters",
    "modules_to_save_tensors": "paperkit.adapters",
    "shared_module": "paperkit.adapters",
    # second models
    "Teacher": "paperkit.teachers",
    "EMA": "paperkit.teachers",
    "Peer": "paperkit.teachers",
    "fresh_model": "paperkit.teachers",
    # derivatives and inspection
    "hvp": "paperkit.derivatives",
    "hutchinson_trace": "paperkit.derivatives",
    "per_sample_gradients": "paperkit.derivatives",
    "parameter_jacobian": "paperkit.derivatives",
    "capture": "paperkit.capture",
    "Captured": "paperkit.capture",
    # the layers an initialization walks over
    "LAYER_KINDS": "paperkit.layers",
    "weight_layers": "paperkit.layers",
    # text: MiniLM's tokenizer (class names, prompts), cached like the text tasks' inputs
    "tokenize": "paperkit.tasks.sentences",
    # weights on disk
    "save_weights": "paperkit.weights",
    "load_weights": "paperkit.weights",
    "read_weights": "paperkit.weights",
}

__all__ = [
    "CheckpointError",
    "PaperkitError",
    "PlanError",
    "PluginError",
    *_LAZY,
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'paperkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - static names for type checkers and IDEs
    from paperkit.adapters import (
        AdaptedLinear,
        AdapterMethod,
        LowRankAdapterMethod,
        LowRankLinear,
        adapter_layers,
        export_peft,
        init_lora_,
        lora_scaling,
        merge_and_unload,
        modules_to_save_tensors,
        shared_module,
        wrap_low_rank,
        write_peft,
    )
    from paperkit.builtin.reservoir import Replay, ReservoirBuffer, join_replay
    from paperkit.capture import Captured, capture
    from paperkit.context import Batch, EvalSet, Optimization, Outputs, RunContext
    from paperkit.derivatives import hutchinson_trace, hvp, parameter_jacobian, per_sample_gradients
    from paperkit.layers import LAYER_KINDS, weight_layers
    from paperkit.models.base import Classifier
    from paperkit.models.cnn import CNN
    from paperkit.models.minilm import MiniLM, load_minilm
    from paperkit.models.mlp import MLP, Maxout
    from paperkit.spec import (
        API_VERSION,
        BATCH_KEYS,
        HOOKS,
        SECTION_HOOKS,
        Claim,
        Method,
        ModelSpec,
        Paper,
        TaskSpec,
        hookimpl,
        option,
    )
    from paperkit.step import forward, per_sample_targets, trainable, unwrapped, weighted_mean
    from paperkit.tasks.base import Experience, IndexedDataset, Task, TaskInfo
    from paperkit.tasks.loading import load_task
    from paperkit.teachers import EMA, Peer, Teacher, fresh_model
    from paperkit.weights import load_weights, read_weights, save_weights
