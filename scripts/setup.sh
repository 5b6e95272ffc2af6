#!/usr/bin/env bash
# Creates .venv and installs relevel. Idempotent: a second run only checks.
#   bash scripts/setup.sh          the toolkit (enough for `relevel demo` and real runs)
#   bash scripts/setup.sh --test   plus what the tests need: pytest, llama.cpp's OpenAI-compatible server with
#                                  SmolLM2 (built from source: ~14 min on 2 cores, once), and Debian's Chromium
#                                  with Playwright for the review page's browser test
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
EXTRAS=""
case "${1:-}" in
    "") ;;
    --test) EXTRAS="[test]" ;;
    *) echo "usage: bash scripts/setup.sh [--test]" >&2; exit 2 ;;
esac
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# torch first, pinned: here pip's find-links hold the CPU wheel; elsewhere point PIP_EXTRA_INDEX_URL at
# PyTorch's CPU index (README) or the plain PyPI wheel brings CUDA packages.
.venv/bin/pip install --quiet --disable-pip-version-check "torch==2.13.0"
.venv/bin/pip install --quiet --disable-pip-version-check -c scripts/constraints.txt -e ".$EXTRAS"
if [ -n "$EXTRAS" ] && ! command -v chromium >/dev/null; then
    # The review page's browser test drives Debian's Chromium (no browser download from a CDN).
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -qq chromium chromium-driver >/dev/null \
            || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }
    else
        echo "note: install Debian's chromium (as root: apt-get install chromium) for the browser test" >&2
    fi
fi
echo "relevel set up in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
