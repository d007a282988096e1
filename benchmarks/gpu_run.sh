#!/usr/bin/env bash
# The GPU benchmarks in one go, for a lent GPU machine (its image has torch, timm, sklearn, scipy,
# matplotlib, safetensors; nothing can be installed from the network there):
#   1. train_throughput.py: the real loop against the synthetic ceiling, per backbone;
#   2. kauh_cv.py: the full 5-fold, 60-epoch CV of the three backbones and their ensemble.
# Usage, from the repository root on the GPU machine:
#   bash benchmarks/gpu_run.sh DATA_DIR          (DATA_DIR from benchmarks/prepare_device_data.py)
# Wheels carried in .whl/ (e.g. grad-cam, ttach, pydicom) are installed first if present.
set -euo pipefail
data=${1:?give the (downsized) KAUH folder}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
explain=""
python3 -c "import pytorch_grad_cam" 2>/dev/null || explain="--no-explain"
python3 benchmarks/train_throughput.py --data "$data" --device cuda --epochs 4 --batch-size 64
python3 benchmarks/kauh_cv.py --data "$data" --device cuda --protocol both $explain
if [ -n "${OUT:-}" ]; then cp benchmarks/results/*.json "$OUT"/; fi
