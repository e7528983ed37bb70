"""Sub-commands contributed by core modules beyond the basic ones in :mod:`paperkit.cli`.

Each registrar takes the argparse sub-parsers object and adds its commands,
importing nothing heavy until its handler runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

REGISTRARS: list[Callable[[Any], None]] = []

from paperkit.verify import register_commands as _evidence  # noqa: E402  (verify, compare)

REGISTRARS.append(_evidence)

from paperkit.authoring import register_commands as _authoring  # noqa: E402  (new)

REGISTRARS.append(_authoring)
