"""Embedded tasks (no download), registered through the ``paperkit.tasks`` entry points.

This module only declares the records and their configs; the tensors are built
in :mod:`paperkit.tasks.digits` and :mod:`paperkit.tasks.modular` when a plan
asks for them.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit.spec import TaskSpec, option


def _fraction(default: float, help: str):
    return option(default, help=help, validator=[v.gt(0.0), v.lt(1.0)])


@attrs.define
class DigitsConfig:
    test_fraction: float = _fraction(0.25, "Fraction of each class held out for testing.")
    split_seed: int = option(0, help="Seed of the train/test split (fixed across run seeds).", validator=v.ge(0))
    standardize: bool = option(True, help="Standardize pixels with the training set's mean and std.")


@attrs.define
class SplitDigitsConfig(DigitsConfig):
    experiences: int = option(5, help="Number of experiences; 10 must divide evenly.", validator=v.in_([1, 2, 5, 10]))
    scenario: Literal["class", "task"] = option(
        "class",
        help="class: one shared head, no task id. task: logits masked to the experience's classes.",
        validator=v.in_(["class", "task"]),
    )
    class_order: list[int] | None = option(None, help="Order of the classes over experiences (default 0..9).")


@attrs.define
class PermutedDigitsConfig(DigitsConfig):
    experiences: int = option(5, help="Number of pixel permutations.", validator=v.ge(1))
    permutation_seed: int = option(0, help="Seed of the permutations.", validator=v.ge(0))
    first_identity: bool = option(True, help="The first experience keeps the original pixel order.")


@attrs.define
class NoisyDigitsConfig(DigitsConfig):
    noise_rate: float = option(0.4, help="Fraction of training labels corrupted.", validator=[v.ge(0.0), v.lt(1.0)])
    noise_type: Literal["symmetric", "asymmetric"] = option(
        "symmetric",
        help="symmetric: any other class; asymmetric: confusable pairs (2->7, 3->8, 5<->6, 7->1).",
        validator=v.in_(["symmetric", "asymmetric"]),
    )
    noise_seed: int = option(0, help="Seed of the corruption (fixed across run seeds).", validator=v.ge(0))


@attrs.define
class LongTailDigitsConfig(DigitsConfig):
    imbalance_ratio: float = option(
        10.0,
        help="ρ = n_head / n_tail; class c keeps n_max·ρ^(-c/9) training samples (Cui et al., 2019).",
        validator=v.ge(1.0),
    )
    imbalance_seed: int = option(
        0, help="Seed of which samples each class keeps (fixed across run seeds).", validator=v.ge(0)
    )


def _shifts(instance: object, attribute: attrs.Attribute, value: list[str]) -> None:
    known = ("noise", "blur", "noise+blur")
    if not value or any(v not in known for v in value) or len(set(value)) != len(value):
        raise ValueError(f"'{attribute.name}' must list distinct shifts from {', '.join(known)}")


@attrs.define
class ShiftedDigitsConfig(DigitsConfig):
    shifts: list[str] = option(
        attrs.Factory(lambda: ["noise", "blur", "noise+blur"]),
        help="Shifted test sets reported beside the clean one: noise, blur, noise+blur.",
        validator=_shifts,
    )
    noise_std: float = option(0.3, help="Std of the Gaussian noise on [0, 1] pixels.", validator=v.ge(0.0))
    shift_seed: int = option(0, help="Seed of the noise (fixed across run seeds).", validator=v.ge(0))


def _flips(instance: object, attribute: attrs.Attribute, value: list[float]) -> None:
    if not value or any(not 0.0 <= f <= 1.0 for f in value):
        raise ValueError(f"'{attribute.name}' must list probabilities in [0, 1]")


@attrs.define
class ColoredDigitsConfig:
    test_fraction: float = _fraction(0.25, "Fraction of each digit held out for testing.")
    split_seed: int = option(0, help="Seed of the train/test split.", validator=v.ge(0))
    label_flip: float = option(
        0.25,
        help="Label noise: the binary label (digit >= 5) flipped with this probability (Arjovsky et al., 2019).",
        validator=[v.ge(0.0), v.lt(0.5)],
    )
    train_flips: list[float] = option(
        attrs.Factory(lambda: [0.1, 0.2]),
        help="One training environment per entry: the probability that the colour disagrees with the label.",
        validator=_flips,
    )
    test_flip: float = option(
        0.9,
        help="Colour-label disagreement of the out-of-distribution test set ood:reversed.",
        validator=[v.ge(0.0), v.le(1.0)],
    )
    colour_seed: int = option(0, help="Seed of the label noise and the colours.", validator=v.ge(0))


@attrs.define
class SequentialDigitsConfig(DigitsConfig):
    permute: bool = option(False, help="Apply one fixed permutation to the 64 steps (permuted sequential digits).")
    permutation_seed: int = option(0, help="Seed of the permutation.", validator=v.ge(0))


@attrs.define
class Mnist1dConfig:
    samples: int = option(
        5000,
        help="Samples generated, 80% for training (the generator's default 5,000).",
        validator=[v.ge(100), v.le(1_000_000)],
    )
    data_seed: int = option(
        42, help="Seed of the generator (its default 42 gives the published MNIST-1D).", validator=v.ge(0)
    )
    iid_noise: float = option(
        0.02, help="Std of the i.i.d. noise (the generator's iid_noise_scale).", validator=v.ge(0.0)
    )
    corr_noise: float = option(0.25, help="Scale of the correlated noise (corr_noise_scale).", validator=v.ge(0.0))
    max_translation: int = option(
        48, help="Maximum translation of the padded template (max_translation).", validator=v.ge(0)
    )
    shear: float = option(0.75, help="Maximum shear (shear_scale).", validator=v.ge(0.0))


@attrs.define
class SplitMnist1dConfig(Mnist1dConfig):
    experiences: int = option(5, help="Number of experiences; 10 must divide evenly.", validator=v.in_([1, 2, 5, 10]))
    scenario: Literal["class", "task"] = option(
        "class",
        help="class: one shared head, no task id. task: logits masked to the experience's classes.",
        validator=v.in_(["class", "task"]),
    )
    class_order: list[int] | None = option(None, help="Order of the classes over experiences (default 0..9).")


@attrs.define
class NextTokenConfig:
    source: Literal["grammar", "stdlib"] = option(
        "grammar",
        help="grammar: sentences of a seeded probabilistic grammar (the same text everywhere); "
        "stdlib: docstrings of 20 standard-library modules (depends on the Python version).",
        validator=v.in_(["grammar", "stdlib"]),
    )
    tokenization: Literal["word", "char"] = option(
        "word",
        help="word: the grammar's ~60 words; char: printable ASCII characters (the stdlib text's only form).",
        validator=v.in_(["word", "char"]),
    )
    tokens: int = option(
        60_000, help="Tokens in the whole stream (train and test).", validator=[v.ge(100), v.le(50_000_000)]
    )
    seq_len: int = option(
        32, help="Context length T: each sample predicts T next tokens.", validator=[v.ge(2), v.le(4096)]
    )
    test_fraction: float = _fraction(0.1, "Fraction of the stream (its end) held out for testing.")
    text_seed: int = option(0, help="Seed of the grammar's sampler.", validator=v.ge(0))


@attrs.define
class ImageFittingConfig:
    image: Literal["china", "flower"] = option(
        "china", help="One of scikit-learn's two bundled photographs.", validator=v.in_(["china", "flower"])
    )
    resolution: int = option(
        64, help="Pixels on the image's short side after area averaging.", validator=[v.ge(4), v.le(427)]
    )
    split: Literal["fit", "interpolate"] = option(
        "fit",
        help="fit: train and test on every pixel; interpolate: train on even rows and columns, test on the rest.",
        validator=v.in_(["fit", "interpolate"]),
    )


@attrs.define
class RegressionConfig:
    dataset: Literal["diabetes", "friedman1", "friedman2", "friedman3"] = option(
        "diabetes",
        help="diabetes: scikit-learn's bundled table (442 × 10); friedman1-3: Friedman's generators.",
        validator=v.in_(["diabetes", "friedman1", "friedman2", "friedman3"]),
    )
    samples: int = option(
        1000,
        help="Samples drawn by the Friedman generators (the diabetes table has 442).",
        validator=[v.ge(10), v.le(1_000_000)],
    )
    noise: float = option(1.0, help="Std of the Gaussian noise of the Friedman generators.", validator=v.ge(0.0))
    data_seed: int = option(0, help="Seed of the Friedman generators.", validator=v.ge(0))
    test_fraction: float = _fraction(0.25, "Fraction held out for testing.")
    split_seed: int = option(0, help="Seed of the train/test split.", validator=v.ge(0))
    standardize_target: bool = option(
        True, help="Standardize the target with the training set's mean and std (MSE 1 = the mean predictor)."
    )


@attrs.define
class MultiLabelConfig:
    samples: int = option(
        2000,
        help="Samples generated (scikit-learn's make_multilabel_classification).",
        validator=[v.ge(20), v.le(1_000_000)],
    )
    features: int = option(
        20, help="Input features (word counts, log1p-transformed and standardized).", validator=[v.ge(1), v.le(10_000)]
    )
    labels: int = option(10, help="Number of labels.", validator=[v.ge(2), v.le(1000)])
    labels_per_sample: int = option(
        2, help="Mean number of labels per sample (the generator's n_labels).", validator=v.ge(1)
    )
    imbalance_ratio: float = option(
        1.0,
        help="Long-tailed training set: the k-th most frequent label keeps ρ^(-k/(L-1)) of its samples (1: as generated).",
        validator=v.ge(1.0),
    )
    observed_fraction: float = option(
        1.0,
        help="Partially labelled training set: each label entry is observed with this probability; unobserved "
        "entries are 0 in y and 0 in batch['label_mask'] (the built-in loss ignores them).",
        validator=[v.gt(0.0), v.le(1.0)],
    )
    data_seed: int = option(0, help="Seed of the generator.", validator=v.ge(0))
    test_fraction: float = _fraction(0.25, "Fraction held out for testing.")
    split_seed: int = option(
        0, help="Seed of the train/test split, the long-tail sub-sampling and the label mask.", validator=v.ge(0)
    )


@attrs.define
class ModularConfig:
    modulus: int = option(97, help="The prime p.", validator=v.ge(2))
    operation: Literal["+", "-", "*", "/"] = option(
        "+", help="The operation a∘b.", validator=v.in_(["+", "-", "*", "/"])
    )
    train_fraction: float = _fraction(0.4, "Fraction of all p² pairs used for training.")
    split_seed: int = option(0, help="Seed of the train/test split.", validator=v.ge(0))
    encoding: Literal["one-hot", "tokens"] = option(
        "one-hot",
        help="one-hot: concatenated one-hot a and b (MLP); tokens: [a, b] ids (transformer).",
        validator=v.in_(["one-hot", "tokens"]),
    )


digits_task = TaskSpec(
    "digits",
    "scikit-learn's handwritten digits, 10 classes, one experience.",
    "paperkit.tasks.digits:digits",
    DigitsConfig,
)
split_digits_task = TaskSpec(
    "split-digits",
    "Digits split into class groups, one experience each.",
    "paperkit.tasks.digits:split_digits",
    SplitDigitsConfig,
)
permuted_digits_task = TaskSpec(
    "permuted-digits",
    "Digits under fixed pixel permutations (domain-incremental).",
    "paperkit.tasks.digits:permuted_digits",
    PermutedDigitsConfig,
)
noisy_digits_task = TaskSpec(
    "noisy-digits",
    "Digits with corrupted training labels and a clean test set.",
    "paperkit.tasks.digits:noisy_digits",
    NoisyDigitsConfig,
)
modular_arithmetic_task = TaskSpec(
    "modular-arithmetic",
    "a∘b mod p over all pairs, for grokking.",
    "paperkit.tasks.modular:modular_arithmetic",
    ModularConfig,
)
long_tail_digits_task = TaskSpec(
    "long-tail-digits",
    "Digits with an exponentially imbalanced training set (ratio ρ), a balanced test set, head/medium/tail accuracy.",
    "paperkit.tasks.digits:long_tail_digits",
    LongTailDigitsConfig,
)
regression_task = TaskSpec(
    "regression",
    "Regression on scikit-learn's diabetes table or Friedman's generators; MSE, MAE and R².",
    "paperkit.tasks.synthetic:regression",
    RegressionConfig,
    kind="regression",
)
multi_label_task = TaskSpec(
    "multi-label",
    "Multi-label classification from scikit-learn's generator, optionally long-tailed; mAP and F1.",
    "paperkit.tasks.synthetic:multi_label",
    MultiLabelConfig,
    kind="multi-label",
)
shifted_digits_task = TaskSpec(
    "shifted-digits",
    "Digits trained clean; test sets with Gaussian noise, blur or both reported beside the clean one.",
    "paperkit.tasks.digits:shifted_digits",
    ShiftedDigitsConfig,
)
colored_digits_task = TaskSpec(
    "colored-digits",
    "Colored digits (Colored MNIST on 8x8 digits): colour predicts the label in two training environments, not out of distribution.",
    "paperkit.tasks.digits:colored_digits",
    ColoredDigitsConfig,
)
mnist1d_task = TaskSpec(
    "mnist1d",
    "MNIST-1D: 10 classes of 1-D signals of length 40 from the mnist1d package's offline generator.",
    "paperkit.tasks.mnist1d:mnist1d",
    Mnist1dConfig,
)
split_mnist1d_task = TaskSpec(
    "split-mnist1d",
    "MNIST-1D split into class groups, one experience each (a second class-incremental stream).",
    "paperkit.tasks.mnist1d:split_mnist1d",
    SplitMnist1dConfig,
)
sequential_digits_task = TaskSpec(
    "sequential-digits",
    "Digits as 64-step sequences of one pixel (shape (64, 1)), optionally permuted, for sequence models.",
    "paperkit.tasks.digits:sequential_digits",
    SequentialDigitsConfig,
)
next_token_task = TaskSpec(
    "next-token",
    "Next-token prediction over a generated grammar or the standard library's docstrings; loss and perplexity.",
    "paperkit.tasks.text:next_token",
    NextTokenConfig,
    kind="next-token",
)
image_fitting_task = TaskSpec(
    "image-fitting",
    "Fit a bundled photograph as a function of pixel coordinates (coordinates -> RGB), or interpolate it.",
    "paperkit.tasks.synthetic:image_fitting",
    ImageFittingConfig,
    kind="regression",
)


def _sentences(per_class: int):
    return option(
        per_class, help="Sentences generated per class (train and test together).", validator=[v.ge(4), v.le(100_000)]
    )


@attrs.define
class SentenceTaskConfig:
    per_class: int = _sentences(150)
    test_fraction: float = _fraction(0.25, "Fraction of the sentences held out for testing.")
    max_length: int = option(
        32,
        help="Tokens per sentence after MiniLM's WordPiece tokenizer (truncated, padded with [PAD]).",
        validator=[v.ge(8), v.le(512)],
    )
    seed: int = option(0, help="Seed of the sentence generator and the split (the same text for every run seed).")


@attrs.define
class TopicsConfig(SentenceTaskConfig):
    topics: int = option(8, help="How many of the eight topics are classes.", validator=[v.ge(2), v.le(8)])


@attrs.define
class SentimentConfig(SentenceTaskConfig):
    per_class: int = _sentences(300)
    negation: float = option(
        0.3,
        help="Probability that a sentiment word is negated ('not ...'), flipping its polarity.",
        validator=[v.ge(0.0), v.le(1.0)],
    )


@attrs.define
class TextStreamConfig(SentimentConfig):
    per_class: int = _sentences(150)


topics_task = TaskSpec(
    "topics",
    "Templated sentences about eight topics with shared distractor words, MiniLM-tokenized (offline).",
    "paperkit.tasks.sentences:topics",
    TopicsConfig,
)
sentiment_task = TaskSpec(
    "sentiment",
    "Reviews built from VADER's lexicon with negations; the label is the sign of the summed valence.",
    "paperkit.tasks.sentences:sentiment",
    SentimentConfig,
)
text_stream_task = TaskSpec(
    "text-stream",
    "Topics A, topics B and sentiment as a task-incremental stream of three MiniLM-tokenized experiences.",
    "paperkit.tasks.sentences:text_stream",
    TextStreamConfig,
)
