#!/usr/bin/env bash
# Creates .venv and installs relevel with its test extras. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# torch first, pinned: here pip's find-links hold the CPU wheel; elsewhere point PIP_EXTRA_INDEX_URL at
# PyTorch's CPU index (README) or the plain PyPI wheel brings CUDA packages.
.venv/bin/pip install --quiet --disable-pip-version-check "torch==2.13.0"
.venv/bin/pip install --quiet --disable-pip-version-check -c scripts/constraints.txt -e ".[test]"
echo "relevel set up in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
