#!/usr/bin/env bash
# Issue 14's accuracy check on a CUDA machine, sized for one short device session (< 10 min):
# the training-step memory estimate (meta, no GPU) against torch.cuda.max_memory_allocated() of
# the same script, fp32 and AMP, SGD and Adam; then the predicted largest batch against the
# largest that runs, for the GPT-style model (its batches are small: ~8 trial runs). Each part
# has its own time limit, so a slow part leaves the others' results (rows are written as they come). Results: OUTDIR/memory_accuracy.{md,json}, OUTDIR/memory_largest.{md,json}.
# Usage: bash bench/memory_gpu_check.sh [OUTDIR]   (torch with CUDA, torchvision, torch-lsp's deps)
set -uo pipefail
out=${1:-${OUT:-/tmp}}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))" \
  | tee "$out/device.txt" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$out/device.txt"
echo "== estimate vs measured, every model (fp32, AMP; SGD, Adam)"
timeout 380 python3 bench/memory_accuracy.py --json "$out/memory_accuracy.json" | tee "$out/memory_accuracy.md"
echo "exit $?"
echo "== predicted largest batch vs the largest that runs (GPT, Adam, fp32)"
timeout 170 python3 bench/memory_accuracy.py --largest --models gpt --optimizers Adam --precisions fp32 \
  --json "$out/memory_largest.json" | tee "$out/memory_largest.md"
echo "exit $?"
