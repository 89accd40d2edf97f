#!/usr/bin/env bash
# The GPU path in one command, at most 5 minutes on one GPU. Run from the repository root:
#
#     bash bench/gpu_check.sh            # a CUDA machine
#     bash bench/gpu_check.sh --cpu      # no GPU: runs every step on the CPU to check the script itself
#
# Steps (each timed; a failing step is shown and the script goes on to the table):
#   1. the GPU tests (pytest -m gpu: tests/test_gpu.py, tests/test_gpu_memory.py)
#   2. CPU and CUDA agree on the shared trained models (neurons, PAN counts, z-scores)
#   3. a survey of the bench models at --gpus-per-model 0.25 (each task's GPU memory capped at its
#      share), with GPU utilisation sampled and peak GPU memory per model
# and ends with one table: each step's status and time, then the survey's per-model table.
# Environment: PYTHON (default: python), GPU_CHECK_OUT (a folder for logs; default: a temporary one),
# GPU_SHARE (default 0.25). Exit status: the number of failed steps.
set -u

PYTHON=${PYTHON:-python}
OUT=${GPU_CHECK_OUT:-$(mktemp -d -t gpu-check-XXXXXX)}
SHARE=${GPU_SHARE:-0.25}
MODE=cuda
if [ "${1:-}" = "--cpu" ]; then MODE=cpu; fi
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}

STEPS=()
FAILED=0

# run NAME LIMIT_S CMD...: time the command, keep its output in $OUT/NAME.log, show it on failure.
run() {
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s): $*"
    local start end rc
    start=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    local secs
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    local status=ok
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status="timeout"; elif [ $rc -ne 0 ]; then status="FAILED (rc $rc)"; fi
    if [ "$status" != ok ]; then
        FAILED=$((FAILED + 1))
        echo "-- $name: $status; last lines of $OUT/$name.log:"
        tail -n 25 "$OUT/$name.log" | sed 's/^/   | /'
    else
        tail -n 3 "$OUT/$name.log" | sed 's/^/   | /'
    fi
    STEPS+=("$(printf '%-14s %-18s %8s s   %s' "$name" "$status" "$secs" "$OUT/$name.log")")
}

echo "gpu_check: mode $MODE, logs in $OUT"
if [ "$MODE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
    # Limits add up to 5 minutes.
    run gpu-tests 90 "$PYTHON" -m pytest -q -m gpu tests/test_gpu.py tests/test_gpu_memory.py
    run cuda-agrees 60 "$PYTHON" bench/cuda_agrees.py --other cuda
    run gpu-survey 150 "$PYTHON" bench/gpu_survey.py --gpus-per-model "$SHARE" --out "$OUT/survey"
else
    # No GPU: the same steps where they can run. The gpu tests collect and skip; CPU vs CPU; survey on CPU.
    run gpu-tests 150 "$PYTHON" -m pytest -q -m gpu tests/test_gpu.py tests/test_gpu_memory.py
    run cuda-agrees 300 "$PYTHON" bench/cuda_agrees.py --other cpu
    run gpu-survey 600 "$PYTHON" bench/gpu_survey.py --device cpu --models test_resnet test_efficientnet \
        --num-images 4 --out "$OUT/survey"
fi

echo
echo "================ gpu_check summary ($MODE) ================"
printf '%-14s %-18s %10s   %s\n' step status time log
for line in "${STEPS[@]}"; do echo "$line"; done
echo
echo "-- survey table (bench/gpu_survey.py):"
if grep -q '^survey:' "$OUT/gpu-survey.log" 2>/dev/null; then
    sed -n '/^model  /,/^survey:/p' "$OUT/gpu-survey.log"
else
    echo "(no table: see $OUT/gpu-survey.log)"
fi
echo "-- CPU vs $( [ "$MODE" = cuda ] && echo CUDA || echo CPU ) agreement (bench/cuda_agrees.py):"
grep -vE '^(Traceback| )' "$OUT/cuda-agrees.log" 2>/dev/null | tail -n 5
exit $FAILED
