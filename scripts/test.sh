#!/usr/bin/env bash
# The whole check: lint and types of the core, then the core's and every plugin's tests, after installing everything.
# Tests run on PYTEST_WORKERS processes (default 2, pytest-xdist); extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-dev.sh
ruff check core/paperkit
ruff format --check core/paperkit
mypy
export PYTHONHASHSEED=0 MPLBACKEND=Agg
shopt -s nullglob
paths=(tests)
for dir in plugins/*/tests; do paths+=("$dir"); done
python -m pytest -q -n "${PYTEST_WORKERS:-2}" --import-mode=importlib "${paths[@]}" "$@"
