#!/usr/bin/env bash
# The GPU kit in one go, for a lent GPU machine (its image has torch, timm, sklearn, scipy,
# matplotlib, safetensors; nothing can be installed from the network there). In this order, each
# step with its own cap in seconds (override with the environment variables named):
#   1. the tests marked gpu and a 1-epoch smoke CV on CUDA            CAP_SMOKE  (150)
#   2. train_throughput.py: the real loop against the bare ceiling    CAP_THRU   (150)
#   3. kauh_cv.py: 3 backbones, 5 folds, 60 epochs, the ensemble      CAP_KAUH   (300)
#   4. aasce_cobb_cv.py, the GPU recipe (5 folds at 1024 x 512)       CAP_AASCE  (600), with AASCE_DIR
#   5. the bundled models at full size (landmarks on every AASCE film, CAP_BUNDLE (600), with AASCE_DIR
#      then the classifier on every KAUH film)
# A step that fails or runs out of time is reported and the next one starts; every JSON, log and
# model file lands in $OUT (when set).
# Usage, from the repository root on the GPU machine:
#   bash benchmarks/gpu_run.sh KAUH_DIR [AASCE_DIR]     (both from benchmarks/prepare_device_data.py)
# Wheels carried in .whl/ (e.g. grad-cam, ttach, pydicom) are installed first if present.
set -uo pipefail
data=${1:?give the (downsized) KAUH folder}
aasce=${2:-}
out=${OUT:-runs/gpu_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
explain=""
python3 -c "import pytorch_grad_cam" 2>/dev/null || explain="--no-explain"
step() {  # step NAME CAP command...
  local name=$1 cap=$2; shift 2
  local t0=$SECONDS
  timeout "$cap" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc in $((SECONDS - t0)) s (cap $cap s)" | tee -a "$out/steps.txt"
  tail -n 3 "$out/$name.log"
}
step smoke "${CAP_SMOKE:-150}" bash -c "python3 -m pytest -q -m gpu tests/test_gpu.py && \
  python3 -m spinexr cv --data '$data' --models small --folds 2 --epochs 1 --device cuda --out '$out/smoke_cv' --quiet"
step throughput "${CAP_THRU:-150}" python3 benchmarks/train_throughput.py --data "$data" --device cuda --epochs 4 --batch-size 64
step kauh_cv "${CAP_KAUH:-300}" python3 benchmarks/kauh_cv.py --data "$data" --device cuda --protocol both $explain
if [ -n "$aasce" ]; then
  step aasce_cv "${CAP_AASCE:-600}" python3 benchmarks/aasce_cobb_cv.py --data "$aasce" --folds 5 --input 1024x512 \
    --epochs 150 --device cuda --minutes-per-fold 1.8 --run-dir "$out/aasce_full"
  step bundle_train "${CAP_BUNDLE:-600}" bash -c "python3 -m spinexr landmarks train --data '$aasce' --test-fraction 0 \
    --input-height 1024 --input-width 512 --epochs 150 --device cuda --max-minutes 4 --out '$out/landmarks_final' --quiet && \
    python3 -m spinexr train --data '$data' --model xception --resize window --test-fraction 0.2 --device cuda --out '$out/classifier' --quiet"
fi
cp benchmarks/results/*.json "$out"/ 2>/dev/null || true
cat "$out/steps.txt"
