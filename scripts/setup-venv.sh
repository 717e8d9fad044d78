#!/usr/bin/env bash
# Creates .venv (once) and installs adastudy with its dev and ray extras into it.
#
# torch is installed first, on purpose: a bare `torch` requirement on a machine with no
# torch pulls a CUDA build of several GB. If the interpreter that builds the venv
# already has torch (say a user's CUDA build), the venv sees it through
# --system-site-packages and nothing replaces it; otherwise torch==2.13.0 (the CPU
# build that pip finds on local disk here) goes into the venv.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.adastudy-installed"

if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ]; then
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    if "$PYTHON" -c "import torch" >/dev/null 2>&1; then
        echo "setup: using the torch that $PYTHON already has ($("$PYTHON" -c 'import torch; print(torch.__version__)'))"
        "$PYTHON" -m venv --system-site-packages "$VENV"
    else
        "$PYTHON" -m venv "$VENV"
    fi
fi

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
fi
"$VENV/bin/python" -m pip install --quiet -e ".[dev,ray]"
touch "$STAMP"
