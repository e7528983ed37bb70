"""Next-token prediction over embedded text (no download): a generated grammar, or the standard library's docstrings.

``grammar``: sentences from a small probabilistic grammar (determiners, adjectives, nouns,
verbs, prepositional phrases, conjunctions), drawn from a seeded generator: the same text on
every machine. Word tokens (a vocabulary of about 60) or characters.

``stdlib``: the docstrings of a fixed list of Python standard-library modules, characters
mapped to printable ASCII (others to ``?``). The text depends on the Python version; the
modules a run read are recorded in ``task.extras["modules"]``.

The token stream is cut into sequences of ``seq_len + 1`` tokens: ``x`` is the first
``seq_len``, ``y`` the same shifted by one (the next token at every position). The test set is
the last ``test_fraction`` of the stream, so no test sequence overlaps a training one.
"""

from __future__ import annotations

from typing import Any

import torch

from paperkit.tasks.base import Experience, IndexedDataset, Task, TaskInfo

DETERMINERS = ["the", "a", "every", "some", "no"]
ADJECTIVES = ["small", "red", "quiet", "old", "bright", "heavy", "young", "green"]
NOUNS = ["cat", "dog", "bird", "river", "tree", "child", "stone", "house", "garden", "teacher", "song", "road"]
VERBS = ["sees", "likes", "follows", "finds", "hears", "carries", "paints", "remembers"]
INTRANSITIVE = ["sleeps", "runs", "waits", "sings", "falls", "grows"]
PREPOSITIONS = ["near", "under", "behind", "over", "with"]
CONJUNCTIONS = ["and", "but", "while", "because"]
PUNCTUATION = [".", ","]
WORDS = sorted({*DETERMINERS, *ADJECTIVES, *NOUNS, *VERBS, *INTRANSITIVE, *PREPOSITIONS, *CONJUNCTIONS, *PUNCTUATION})

STDLIB_MODULES = (
    "json",
    "collections",
    "functools",
    "itertools",
    "pathlib",
    "argparse",
    "textwrap",
    "string",
    "random",
    "statistics",
    "fractions",
    "decimal",
    "heapq",
    "bisect",
    "shutil",
    "csv",
    "difflib",
    "calendar",
    "datetime",
    "enum",
)
#: printable ASCII, with "?" for any other character
CHARACTERS = [chr(c) for c in range(32, 127)] + ["\n"]


class Grammar:
    """A seeded sampler of the grammar's sentences (one ``torch.Generator``: the same text everywhere)."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def pick(self, words: list[str]) -> str:
        return words[int(torch.randint(len(words), (1,), generator=self.generator))]

    def chance(self, p: float) -> bool:
        return bool(torch.rand((), generator=self.generator) < p)

    def noun_phrase(self) -> list[str]:
        words = [self.pick(DETERMINERS)]
        if self.chance(0.5):
            words.append(self.pick(ADJECTIVES))
        words.append(self.pick(NOUNS))
        if self.chance(0.25):
            words += [self.pick(PREPOSITIONS), self.pick(DETERMINERS), self.pick(NOUNS)]
        return words

    def clause(self) -> list[str]:
        if self.chance(0.6):
            return [*self.noun_phrase(), self.pick(VERBS), *self.noun_phrase()]
        return [*self.noun_phrase(), self.pick(INTRANSITIVE)]

    def sentence(self) -> list[str]:
        words = self.clause()
        if self.chance(0.3):
            words += [",", self.pick(CONJUNCTIONS), *self.clause()]
        return [*words, "."]


def grammar_text(words: int, seed: int) -> list[str]:
    """At least ``words`` word tokens of grammatical sentences."""
    grammar, out = Grammar(seed), list[str]()
    while len(out) < words:
        out += grammar.sentence()
    return out


def stdlib_text(limit: int) -> tuple[str, list[str]]:
    """The docstrings of :data:`STDLIB_MODULES` (module, classes, functions), joined, at most ``limit`` characters."""
    import importlib
    import inspect

    parts, used = [], []
    for name in STDLIB_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # pragma: no cover - every listed module ships with CPython
            continue
        used.append(name)
        members = sorted(inspect.getmembers(module, lambda o: inspect.isclass(o) or inspect.isfunction(o)))
        for obj in [module, *(member for _n, member in members)]:
            doc = inspect.getdoc(obj)
            if doc and (obj is module or getattr(obj, "__module__", None) == name):  # its own, not imported names
                parts.append(doc)
    text = "\n\n".join(parts)
    return text[:limit], used


def next_token(config: Any) -> Task:
    if config.source == "grammar":
        words = grammar_text(config.tokens, config.text_seed)
        if config.tokenization == "word":
            vocab = WORDS
            stream = [vocab.index(w) for w in words]
        else:
            vocab = CHARACTERS
            text = " ".join(words).replace(" .", ".").replace(" ,", ",")
            stream = [CHARACTERS.index(c) for c in text]
        modules: list[str] = []
    else:
        if config.tokenization == "word":
            raise ValueError('the stdlib text is character-level: use tokenization = "char"')
        text, modules = stdlib_text(config.tokens)
        vocab, lookup = CHARACTERS, {c: i for i, c in enumerate(CHARACTERS)}
        stream = [lookup.get(c, lookup["?"]) for c in text]
    tokens = torch.tensor(stream[: config.tokens], dtype=torch.int64)
    width = config.seq_len + 1
    n = len(tokens) // width
    if n < 4:
        raise ValueError(f"{len(tokens)} tokens make fewer than 4 sequences of {width}; raise tokens or lower seq_len")
    sequences = tokens[: n * width].reshape(n, width)
    n_test = max(1, int(round(n * config.test_fraction)))
    train, test = sequences[:-n_test], sequences[-n_test:]
    info = TaskInfo(
        input_dim=config.seq_len,
        num_classes=len(vocab),
        input_kind="tokens",
        vocab_size=len(vocab),
        seq_len=config.seq_len,
    )
    exp = Experience(
        0,
        IndexedDataset(train[:, :-1], train[:, 1:]),
        IndexedDataset(test[:, :-1], test[:, 1:]),
        tuple(range(len(vocab))),
        f"{config.source} text",
    )
    return Task("next-token", info, [exp], "single", extras={"vocabulary": list(vocab), "modules": modules})
