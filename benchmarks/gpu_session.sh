#!/usr/bin/env bash
# The one prepared run for a session that is lent a GPU (issue 18): about 9 minutes on an H100/H200, every
# figure into $OUT (the device tool brings it back), each step under its own timeout so one slow step
# cannot eat the others. Put the files in benchmarks/results/ afterwards, named for the GPU.
#   device run:  bash benchmarks/gpu_session.sh                     (timeout_s 600)
#   CPU smoke:   OUT=/tmp/gpu-smoke bash benchmarks/gpu_session.sh mid cpu
set -uo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-real} DEVICE=${2:-cuda}
OUT=${OUT:-/tmp/llada-gpu-session}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
PY=${PYTHON:-python3}
SIZES=$([ "$CONFIG" = real ] && echo 512,1024 || echo 256)
step() {  # step NAME SECONDS COMMAND...: output in $OUT/NAME.txt, a line in $OUT/steps.txt
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    echo "$name rc=$? $((SECONDS - start))s" | tee -a "$OUT/steps.txt"
}
$PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')" | tee "$OUT/steps.txt"
$PY -c "import diffusers, safetensors, tokenizers" 2>/dev/null || $PY -m pip install -q -e . pytest 2>&1 | tail -1
# The CUDA tests: grouped dispatch equal to the loop, graph capture, inductor (skipped without CUDA).
step cuda-tests 90 $PY -m pytest -q -p no:cacheprovider tests/test_moe_dispatch.py tests/test_backbone.py
# Every dispatch side by side, the block forward, T2I backbone phase and turbo decoder at each size, peaks.
step gpu-full 240 $PY benchmarks/gpu_full.py --config "$CONFIG" --device "$DEVICE" --sizes "$SIZES" --repeats 3 --json "$OUT/gpu-full.json"
# The same T2I phase with the grouped dispatch opted in (auto runs batched on a GPU until measured).
step gpu-full-grouped 120 env LLADA_MOE_DISPATCH=grouped $PY benchmarks/gpu_full.py --config "$CONFIG" --device "$DEVICE" --sizes "${SIZES%%,*}" --repeats 1 --skip-decoder
# Text decoding speed (passes per token, tokens per second) on the full-size backbone.
step backbone 120 $PY benchmarks/backbone.py --config "$CONFIG" --device "$DEVICE" --repeats 3
