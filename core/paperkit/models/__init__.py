"""Embedded models, registered through the ``paperkit.models`` entry points.

Every embedded model is a :class:`paperkit.models.base.Classifier`: a feature
extractor ``features(x)`` followed by a linear ``head``, so methods that need
features (replay with angular logits, analytic classifiers) find them the same
way on every model.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit.spec import ModelSpec, option


@attrs.define
class MLPConfig:
    depth: int = option(2, help="Hidden layers (blocks) between the input layer and the head.", validator=v.ge(0))
    width: int = option(128, help="Hidden width.", validator=v.ge(1))
    activation: Literal["relu", "tanh", "gelu", "sigmoid", "identity", "maxout", "sine", "square"] = option(
        "relu",
        help="Nonlinearity. maxout: the max over maxout_pieces linear units (Goodfellow et al., 2013); "
        "sine: sin(sine_w0·x), SIREN's (Sitzmann et al., 2020); square: x², the grokking papers' quadratic unit.",
        validator=v.in_(["relu", "tanh", "gelu", "sigmoid", "identity", "maxout", "sine", "square"]),
    )
    maxout_pieces: int = option(2, help="Linear pieces per maxout unit (k).", validator=[v.ge(2), v.le(64)])
    sine_w0: float = option(30.0, help="ω0 of the sine activation (SIREN's 30).", validator=v.gt(0.0))
    norm: Literal["none", "batch", "layer", "ghost-batch"] = option(
        "none",
        help="Normalization after each hidden linear layer; ghost-batch: batch norm over chunks of "
        "ghost_batch samples (Hoffer et al., 2017).",
        validator=v.in_(["none", "batch", "layer", "ghost-batch"]),
    )
    ghost_batch: int = option(32, help='Samples per ghost batch (norm = "ghost-batch").', validator=v.ge(2))
    residual: bool = option(False, help="Hidden blocks are residual: x + W2·act(W1·x).")
    dropout: float = option(0.0, help="Dropout probability after each activation.", validator=[v.ge(0.0), v.lt(1.0)])
    bias: bool = option(True, help="Linear layers have biases.")


@attrs.define
class CNNConfig:
    channels: int = option(
        32, help="Channels of the first conv layer (the second has twice as many).", validator=v.ge(1)
    )
    width: int = option(128, help="Width of the fully connected feature layer.", validator=v.ge(1))
    norm: Literal["none", "batch"] = option(
        "none", help="Batch norm after each convolution.", validator=v.in_(["none", "batch"])
    )


@attrs.define
class TransformerConfig:
    d_model: int = option(64, help="Embedding width.", validator=v.ge(8))
    heads: int = option(4, help="Attention heads (must divide d_model).", validator=v.ge(1))
    layers: int = option(2, help="Encoder layers.", validator=v.ge(1))
    ff_mult: int = option(4, help="Feed-forward width as a multiple of d_model.", validator=v.ge(1))
    dropout: float = option(0.0, help="Dropout inside the encoder.", validator=[v.ge(0.0), v.lt(1.0)])
    patch: int = option(
        8, help="For feature inputs: features per token (the digits' 8 pixels per row).", validator=v.ge(1)
    )


mlp_model = ModelSpec(
    "mlp",
    "Multi-layer perceptron; depth, width, norm and residuals configurable.",
    "paperkit.models.mlp:build",
    MLPConfig,
)
cnn_model = ModelSpec("cnn", "Two-layer CNN for image tasks.", "paperkit.models.cnn:build", CNNConfig)


@attrs.define
class CausalTransformerConfig:
    d_model: int = option(64, help="Embedding width.", validator=[v.ge(8), v.le(8192)])
    heads: int = option(4, help="Attention heads (must divide d_model).", validator=v.ge(1))
    layers: int = option(2, help="Decoder blocks.", validator=[v.ge(1), v.le(256)])
    ff_mult: int = option(4, help="Feed-forward width as a multiple of d_model.", validator=v.ge(1))
    dropout: float = option(0.0, help="Attention dropout.", validator=[v.ge(0.0), v.lt(1.0)])
    qk_norm: bool = option(
        False, help="LayerNorm of each head's queries and keys before attention (QK-norm; Dehghani et al., 2023)."
    )
    tie_embeddings: bool = option(False, help="The output head shares the token embedding's weights.")


transformer_model = ModelSpec(
    "transformer",
    "Tiny pre-norm transformer encoder over tokens or feature patches.",
    "paperkit.models.transformer:build",
    TransformerConfig,
)
causal_transformer_model = ModelSpec(
    "causal-transformer",
    "Small decoder-only transformer with its own causal attention (QK-norm option) for next-token tasks.",
    "paperkit.models.causal:build",
    CausalTransformerConfig,
)


@attrs.define
class MiniLMConfig:
    freeze: Literal["none", "encoder"] = option(
        "none",
        help="none: fine-tune everything (or what an adapter leaves trainable); encoder: train the head only (a linear probe).",
        validator=v.in_(["none", "encoder"]),
    )
    dropout: float | None = option(
        None,
        help="Dropout inside the encoder (default: the checkpoint's 0.1); 0 makes several processes match one exactly.",
        validator=v.optional([v.ge(0.0), v.lt(1.0)]),
    )


minilm_model = ModelSpec(
    "minilm",
    "The pretrained all-MiniLM-L6-v2 encoder (6-layer BERT, 22.7 M parameters), mean-pooled, with a linear head.",
    "paperkit.models.minilm:build",
    MiniLMConfig,
)
