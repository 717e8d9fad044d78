#!/usr/bin/env bash
# The CUDA checks of the GPU path, at most about 4 minutes on one GPU:
#   1. the heads benchmark on CUDA (statistics on, against the matmul floor);
#   2. a 200-step IResNet-50 trial on synthetic 112 x 112 images in bf16 against a bare
#      PyTorch loop on the same model and data (target >= 0.95 x), with peak GPU memory;
#   3. the test suite's CUDA tests (marker `gpu`; they skip on the CPU).
# Record what it prints in benchmarks/RESULTS.md ("GPU path").
#
#   benchmarks/gpu_check.sh                  # uses $PYTHON, else .venv/bin/python, else python3
#
# Needs torch with CUDA and adastudy's dependencies in that Python; adastudy itself is
# taken from this checkout (PYTHONPATH), so no install is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
        PY=.venv/bin/python
    else
        PY=python3
    fi
fi
if ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check: no CUDA GPU visible to $PY (torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo missing))" >&2
    exit 2
fi
started=$(date +%s)
echo "# gpu_check $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'bf16', torch.cuda.is_bf16_supported())"

echo; echo "## 1. heads on CUDA (N = 256, D = 512)"
timeout 75 "$PY" benchmarks/heads.py --device cuda --classes 10000,100000 --repeats 10 --no-pml --markdown

echo; echo "## 2. IResNet-50, 200 steps, bf16: run_trial against a bare loop"
timeout 150 "$PY" benchmarks/loop.py --device cuda --model iresnet50 --image-size 112 \
    --steps 200 --batch 128 --identities 1000 --amp bf16 --head adacos-dynamic --repeats 2

echo; echo "## 3. the CUDA tests"
timeout 60 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests

echo; echo "gpu_check: done in $(( $(date +%s) - started )) s"
