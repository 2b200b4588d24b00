#!/usr/bin/env bash
# GPU check for issue 6: the Table-1 grid (2,563 DL19 pairs x 31 configurations) on a model with
# MonoBERT-large's shape in bf16, pairs/s, achieved TFLOP/s, fp32-vs-bf16 agreement.
#
#   bash benchmarks/gpu_check.sh            # on one H100/H200 (torch + transformers preinstalled, no network)
#   bash benchmarks/gpu_check.sh --smoke    # on CPU, tiny model, a few pairs: checks the script itself
#
# Needs nothing outside this repository (data: src/matchsig/data/demo, tokenizer: benchmarks/assets;
# random weights). Writes $OUT/gpu_check.json when OUT is set. Expected: well under 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRANSFORMERS_VERBOSITY=error
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
python -c "import sys, torch, transformers, numpy; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT"; fi
timeout 470 python benchmarks/gpu_check.py "$@"
