"""User-facing errors.

Every mistake a user can make (a bad plan, a broken plugin, a bad checkpoint) is
raised as a :class:`PaperkitError` whose message is one line naming what is wrong
and where. The CLI prints that line and exits with status 2; it never shows a
traceback for these.
"""

from __future__ import annotations

from collections.abc import Iterable


class PaperkitError(Exception):
    """Base class for errors caused by user input; ``str(err)`` is one line."""

    exit_code = 2

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (one_line(args[0]),)
        super().__init__(*args)


#: Characters ``str.splitlines`` breaks at; user text echoed in a message (a ``--set`` value,
#: a TOML key) may hold them, and the message must stay one line.
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(text: str) -> str:
    """``text`` with line breaks escaped (``\\n``), so it prints as one line."""
    return text.translate(_LINE_BREAKS)


class PlanError(PaperkitError):
    """The plan (file, overrides or variant) is invalid.

    ``location`` is the ``file: [table] key`` prefix so messages look alike.
    """

    def __init__(self, message: str, location: str = "") -> None:
        self.location = location
        super().__init__(f"{location}: {message}" if location else message)


class PluginError(PaperkitError):
    """A plugin could not be loaded, is invalid, or failed inside a hook."""


class CheckpointError(PaperkitError):
    """A checkpoint or weights file is missing, truncated, tampered or mismatched."""


class DivergenceError(PaperkitError):
    """Training produced a non-finite loss or parameter."""

    exit_code = 3


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return a ``" (did you mean 'x'?)"`` suffix, or an empty string.

    Case and the separators ``-``/``_`` are ignored when comparing (``AdamW`` and
    ``adam_w`` both suggest ``adamw``); an exact match modulo those wins.
    """
    import difflib

    options = sorted(choices)

    def norm(text: str) -> str:
        return text.lower().replace("_", "-")

    folded = {norm(c): c for c in options}
    if norm(name) in folded and folded[norm(name)] != name:
        return f" (did you mean '{folded[norm(name)]}'?)"
    close = difflib.get_close_matches(norm(name), list(folded), n=1, cutoff=0.6)
    return f" (did you mean '{folded[close[0]]}'?)" if close else ""
