"""``paperkit new``: a plugin for a new paper, rendered from the cookiecutter template.

The template (``templates/paperkit-plugin`` in the repository) produces a
distribution laid out like every plugin in ``plugins/``: the record and config
in ``__init__.py`` (no torch), the math in ``functional.py``, thin hook shells
in ``hooks.py``, a claim plan, the method card, math tests and the one-line
conformance suite. Each hook the author picks comes with a small, working
example so the rendered plugin installs, is listed, and passes its tests before
the author changes a line; the author then replaces the example with the paper.

Every value is validated here, before anything is rendered: an invalid key, a
key an installed distribution already claims, an unknown hook or a malformed
arXiv id is one line naming the problem. The template's ``pre_gen_project``
hook calls :func:`check_context` too, so ``cookiecutter`` run by hand gets the
same checks. Nothing in this module imports torch.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any

from paperkit.errors import PaperkitError, did_you_mean

#: Hooks the template has a working example for, in the engine's order (:data:`paperkit.spec.HOOKS`). The
#: others (``loss``, ``after_step``, ...) are added by hand to a plugin rendered with the hook of the plan
#: section they belong in (:data:`paperkit.spec.HOOK_SECTIONS`); see CONTRIBUTING.md, "More hooks".
#: (A literal, so that ``paperkit --help`` lists this command without importing the records' module;
#: ``tests/test_authoring.py`` checks it against ``HOOKS``.)
TEMPLATE_HOOKS: tuple[str, ...] = (
    "init",
    "adapt",
    "optimize",
    "continual_step",
    "loss",
    "regularize",
    "after_step",
    "evaluate",
    "after_run",
)
ARXIV_PATTERN = re.compile(r"^(\d{4}\.\d{4,5}|[a-z][a-z.-]*/\d{7})(v\d+)?$")
TEMPLATE_ENV = "PAPERKIT_TEMPLATE"
TEMPLATE_NAME = "paperkit-plugin"


class AuthoringError(PaperkitError):
    """A value given to ``paperkit new`` (or to the template) is invalid."""


# -- validation ----------------------------------------------------------------------
def check_key(key: str, registry: Any = None) -> str:
    """``key`` if it is a valid, free method key; otherwise one-line :class:`AuthoringError`."""
    from paperkit.spec import KEY_PATTERN

    if not KEY_PATTERN.match(key or ""):
        raise AuthoringError(
            f"invalid key {key!r}: use lowercase letters and digits in words joined by single dashes, "
            "starting with a letter (e.g. 'lsuv', 'zero-init')"
        )
    if registry is None:
        from paperkit.registry import Registry

        registry = Registry()
    if key in registry.names("method"):
        dist, version = registry.origin("method", key)
        raise AuthoringError(
            f"key '{key}' is taken by the installed distribution {dist} {version}".rstrip() + "; pick another"
        )
    module = module_name(key)
    if importlib.util.find_spec(module) is not None:
        raise AuthoringError(f"key '{key}': a module named '{module}' is already importable; pick another key")
    return key


def module_name(key: str) -> str:
    """The plugin's import package: ``zero-init`` -> ``paperkit_zero_init``."""
    return "paperkit_" + key.replace("-", "_")


def check_hooks(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Hook names from ``"adapt, regularize"`` (or a list), validated, in the engine's order."""
    from paperkit.spec import HOOK_SECTIONS, HOOKS, SECTION_HOOKS

    names = [h.strip() for h in (text.replace(" ", ",").split(",") if isinstance(text, str) else text)]
    names = [h for h in names if h]
    if not names:
        raise AuthoringError(f"no hook given; pick one or more of {', '.join(TEMPLATE_HOOKS)}")
    for name in names:
        if name not in TEMPLATE_HOOKS:
            if name in HOOKS:
                home = HOOK_SECTIONS[name]
                start = next(h for h in TEMPLATE_HOOKS if home in SECTION_HOOKS and h in SECTION_HOOKS[home])
                raise AuthoringError(
                    f"hook '{name}' has no template example; render with --hooks {start} (its plan section [{home}]) "
                    f"and add '{name}' by hand (CONTRIBUTING.md, 'More hooks')"
                )
            raise AuthoringError(
                f"unknown hook '{name}'{did_you_mean(name, TEMPLATE_HOOKS)} (choose from {', '.join(TEMPLATE_HOOKS)})"
            )
    return tuple(h for h in TEMPLATE_HOOKS if h in names)


def check_arxiv(value: str) -> str:
    value = (value or "").strip()
    if value.lower().startswith(("http://", "https://")):
        value = value.rstrip("/").rsplit("/", 1)[-1]
    if value and not ARXIV_PATTERN.match(value):
        raise AuthoringError(f"invalid arXiv id {value!r}: expected e.g. '2007.00151' (or leave it empty)")
    return value


def check_year(value: str | int) -> int:
    try:
        year = int(str(value).strip())
    except ValueError:
        raise AuthoringError(f"invalid year {value!r}: expected a number such as 2024") from None
    if not 1900 <= year <= datetime.date.today().year + 1:
        raise AuthoringError(f"invalid year {year}: expected 1900 to {datetime.date.today().year + 1}")
    return year


def check_text(name: str, value: str, required: bool = True) -> str:
    """A title or author that can sit inside Python and TOML strings unescaped."""
    value = (value or "").strip()
    if required and not value:
        raise AuthoringError(f"{name} is empty")
    bad = next((c for c in value if c in '"\\' or not c.isprintable()), None)
    if bad is not None:
        raise AuthoringError(f"{name} {value!r} contains {bad!r}; use single quotes and no backslashes or line breaks")
    return value


def check_context(context: dict[str, Any], registry: Any = None) -> dict[str, Any]:
    """The template's answers, validated and normalized (what cookiecutter renders with)."""
    return {
        "key": check_key(str(context.get("key", "")), registry),
        "paper_title": check_text("paper title", str(context.get("paper_title", ""))),
        "arxiv_id": check_arxiv(str(context.get("arxiv_id", ""))),
        "year": str(check_year(context.get("year", ""))),
        "hooks": ",".join(check_hooks(str(context.get("hooks", "")))),
        "author": check_text("author", str(context.get("author", ""))),
        "license": check_license(str(context.get("license", DEFAULT_LICENSE))),
    }


#: The plugin's license when ``--license`` is not given: the project's own.
DEFAULT_LICENSE = "Apache-2.0"
SPDX_PATTERN = re.compile(r"^[A-Za-z0-9.+-]+( (AND|OR|WITH) [A-Za-z0-9.+-]+)*$")


def check_license(value: str) -> str:
    """An SPDX license id or expression (``MIT``, ``Apache-2.0``, ``GPL-3.0-only OR MIT``)."""
    value = value.strip()
    if not SPDX_PATTERN.match(value):
        raise AuthoringError(
            f"license {value!r} is not an SPDX id or expression (e.g. 'MIT', 'Apache-2.0', 'BSD-3-Clause')"
        )
    return value


# -- rendering -----------------------------------------------------------------------
def template_dir(explicit: str | Path | None = None) -> str:
    """Where the template is: ``--template``, ``$PAPERKIT_TEMPLATE``, or the copy installed with paperkit.

    ``paperkit/templates`` links to the repository's ``templates/``; a wheel
    holds a copy. Where links are not checked out as links, the checkout's
    ``templates/`` is found by walking up from this file.
    """
    if explicit:
        return str(explicit)
    if os.environ.get(TEMPLATE_ENV):
        return os.environ[TEMPLATE_ENV]
    here = Path(__file__).resolve()
    for root in (here.parent, *here.parents):
        candidate = root / "templates" / TEMPLATE_NAME
        if (candidate / "cookiecutter.json").is_file():
            return str(candidate)
    raise AuthoringError(
        f"cannot find the plugin template: pass --template (a directory or git URL of templates/{TEMPLATE_NAME}) "
        f"or set {TEMPLATE_ENV}"
    )


def new_plugin(
    key: str,
    paper_title: str,
    year: str | int,
    hooks: str | list[str],
    author: str,
    arxiv_id: str = "",
    output_dir: str | Path = ".",
    template: str | Path | None = None,
    no_input: bool = True,
    registry: Any = None,
    license: str = DEFAULT_LICENSE,
) -> Path:
    """Render the template for ``key`` into ``output_dir/paperkit-<key>``; returns that directory."""
    context = check_context(
        {
            "key": key,
            "paper_title": paper_title,
            "arxiv_id": arxiv_id,
            "year": year,
            "hooks": hooks,
            "author": author,
            "license": license,
        },
        registry,
    )
    output = Path(output_dir)
    if output.exists() and not output.is_dir():
        raise AuthoringError(f"{output} is a file, not a directory; choose another --output")
    target = output / f"paperkit-{context['key']}"
    if target.exists():
        raise AuthoringError(f"{target} already exists; remove it or choose another --output")
    output.mkdir(parents=True, exist_ok=True)
    from cookiecutter.exceptions import CookiecutterException, FailedHookException
    from cookiecutter.main import cookiecutter

    try:
        made = cookiecutter(template_dir(template), no_input=no_input, extra_context=context, output_dir=str(output))
    except FailedHookException as exc:
        raise AuthoringError(
            f"the template refused these values: {str(exc).splitlines()[0] if str(exc) else 'see above'}"
        ) from None
    except CookiecutterException as exc:
        raise AuthoringError(f"rendering the template failed: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    return Path(made)


# -- the command ---------------------------------------------------------------------
def cmd_new(args: argparse.Namespace) -> int:
    output = args.output or ("plugins" if Path("plugins").is_dir() else ".")
    interactive = not args.no_input and sys.stdin.isatty()
    path = new_plugin(
        args.key,
        args.title or args.key,
        args.year or datetime.date.today().year,
        args.hooks,
        args.author,
        args.arxiv or "",
        output,
        args.template,
        no_input=not interactive,
        license=args.license,
    )
    key = path.name.removeprefix("paperkit-")  # the prompts may have changed it
    print(f"created {path}")
    print("next:")
    print(f"  pip install -e {path}")
    print(f"  paperkit plugins --check          # '{key}' is listed as ok")
    print(f"  python -m pytest {path / 'tests'}")
    print("then replace the example in functional.py with the paper's math (CONTRIBUTING.md, 'Adding a paper')")
    return 0


def register_commands(sub: Any) -> None:
    """Add ``paperkit new`` (cheap: nothing is imported until it runs)."""
    p = sub.add_parser(
        "new",
        help="start a plugin for a new paper from the template",
        description="Render templates/paperkit-plugin into OUTPUT/paperkit-KEY: a plugin that installs, is listed, "
        "and passes the conformance suite before you change a line.",
    )
    p.add_argument("key", help="the method key plans will write (lowercase, dashes), e.g. 'zero-init'")
    p.add_argument("--title", help="the paper's title (default: the key)")
    p.add_argument("--arxiv", help="arXiv id, e.g. 2007.00151")
    p.add_argument("--year", help="the paper's year (default: this year)")
    p.add_argument(
        "--hooks",
        default="regularize",
        help=f"comma-separated hooks the method implements, from {', '.join(TEMPLATE_HOOKS)} (default: regularize)",
    )
    p.add_argument(
        "--author", default=os.environ.get("USER") or "paperkit author", help="the plugin's author (pyproject)"
    )
    p.add_argument("--output", help="directory that receives paperkit-KEY (default: plugins/ if present, else .)")
    p.add_argument(
        "--license",
        default=DEFAULT_LICENSE,
        help=f"SPDX id of the plugin's license (default {DEFAULT_LICENSE}); mind the reference code's license",
    )
    p.add_argument(
        "--template",
        help=f"template directory or git URL (default: templates/{TEMPLATE_NAME}, installed with paperkit)",
    )
    p.add_argument("--no-input", action="store_true", help="never prompt (the default when stdin is not a terminal)")
    p.set_defaults(handler=cmd_new)
