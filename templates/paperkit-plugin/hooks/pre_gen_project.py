"""Validate the answers before any file is written (cookiecutter deletes the output on failure)."""

import sys

CONTEXT = {
    "key": "{{ cookiecutter.key }}",
    "paper_title": """{{ cookiecutter.paper_title }}""",
    "arxiv_id": "{{ cookiecutter.arxiv_id }}",
    "year": "{{ cookiecutter.year }}",
    "hooks": "{{ cookiecutter.hooks }}",
    "author": """{{ cookiecutter.author }}""",
    "license": "{{ cookiecutter.license }}",
}

try:
    from paperkit.authoring import AuthoringError, check_context
except ImportError:
    sys.exit("error: paperkit is not importable here; install paperkit first (pip install paperkit)")

try:
    normalized = check_context(CONTEXT)
except AuthoringError as exc:
    sys.exit(f"error: {exc}")
if normalized["hooks"] != CONTEXT["hooks"] or normalized["arxiv_id"] != CONTEXT["arxiv_id"]:
    sys.exit(f"error: write hooks as '{normalized['hooks']}' and the arXiv id as '{normalized['arxiv_id']}'")
