#!/usr/bin/env bash
# Install paperkit, its test extras and every plugin distribution in plugins/ (editable)
# into the active Python environment. Torch is installed first at the tested version
# unless a torch build is already present (keep your CUDA build on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch" 2>/dev/null || python -m pip install "torch==2.13.0"
args=(-e ".[test,docs]")
for plugin in plugins/*/; do
  # with its test extras: the reference implementations its parity tests run against
  [ -f "$plugin/pyproject.toml" ] && args+=(-e "${plugin%/}[test]")
done
python -m pip install "${args[@]}"
