#!/usr/bin/env bash
# The CUDA paths, checked by hand on a GPU machine (CI has none): shape inference with
# execution.device=cuda and auto, a shape error found on CUDA, a training run on CUDA, and the
# scaffold actions whose code differs on CUDA (tests/scaffold/gpu_check.py).
# Usage: bash bench/gpu_check.sh [OUTDIR]   (needs torch with CUDA and torch-lsp's dependencies)
set -uo pipefail
out=${1:-/tmp}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))"
echo "== shapes, device cuda (seed fixture)"
time python3 -m torch_lsp shapes --device cuda fixtures/cifar10_seed.py | sed -n '28,40p'
echo "== shapes, device auto, JSON (script-level Linear mismatch)"
python3 -m torch_lsp shapes --device auto --format json fixtures/shapes/script_linear_broken.py > "$out/auto.json"; echo "exit $?"
python3 -c "import json,sys; r=json.load(open('$out/auto.json')); print({k: r[k] for k in r if k in ('device','errors','stopped')})"
echo "== shapes, device cuda (broken LeNet)"
python3 -m torch_lsp shapes --device cuda fixtures/shapes/lenet_broken.py | grep -E "TL2|error" | head -5
echo "== train on cuda (1 epoch of the seed)"
EPOCHS=1 python3 -m torch_lsp train --device cuda --no-progress --runs-dir "$out/runs" fixtures/cifar10_seed.py | tail -12
echo "== scaffold actions on cuda"
timeout 150 python3 tests/scaffold/gpu_check.py | tail -30
