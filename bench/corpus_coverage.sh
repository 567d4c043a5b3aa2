#!/usr/bin/env bash
# Forward-shape coverage of torch-lsp on the shared corpus, measured as a user would: the
# corpus gets its own project venv (torch + torchvision + the third-party packages the corpus
# imports, those that install here), and torch-lsp runs with VIRTUAL_ENV pointing at it, so
# the shape worker runs in the project's interpreter (docs/shapes.md, "Interpreter").
#
#   bench/corpus_coverage.sh [CORPUS_DIR] [-- extra coverage.py args]
#
# Env: CORPUS_VENV (default /work/corpus-venv), TORCH_LSP (default: the torch-lsp next to the
# python running this repo's venv, else the one on PATH).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
corpus="${1:-/work/shared/corpus}"
shift || true
[ "${1:-}" = "--" ] && shift
venv="${CORPUS_VENV:-/work/corpus-venv}"
torch_lsp="${TORCH_LSP:-$here/.venv/bin/torch-lsp}"
[ -x "$torch_lsp" ] || torch_lsp="$(command -v torch-lsp)"

# What the corpus imports (its MANIFEST.md). Each is installed on its own, so one that does not
# install here (no wheel for this platform, not on PyPI) does not stop the others. tensorflow
# is left out although it installs: with it loaded, torch's lazy triton import segfaults the
# job's process, so the files that import it stop either way (a note names the crash).
packages=(einops ema_pytorch accelerate scipy ftfy regex pycocotools nltk matplotlib tensorboard
          pytorch_fid Pillow packaging tqdm fvcore onnxruntime panopticapi detectron2)

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
    for p in "${packages[@]}"; do
        if "$venv/bin/pip" install -q "$p" >"$venv/install-$p.log" 2>&1; then
            echo "installed $p"
        else
            echo "NOT installed: $p (see $venv/install-$p.log)"
        fi
    done
fi

VIRTUAL_ENV="$venv" nice -n 10 python3 "$corpus/coverage.py" -v -j 2 --torch-lsp "$torch_lsp" "$@"
