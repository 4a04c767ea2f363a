#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, run the benchmark suite on ONNX Runtime's CUDA
# provider, then the tests that matter on it, in a few minutes. From the repository root:
#
#   bash bench/gpu_check.sh [OUT_DIR]            # default out/gpu_check
#
# What it needs, checked first (it stops with a message when something is missing):
# - onnxruntime-gpu importable by $PYTHON (default python3). A GPU machine may have no package
#   index: set ORT_GPU_WHEEL=/path/onnxruntime_gpu-*.whl (installed with --no-index into a private
#   folder) or ORT_GPU_SITE=/folder/holding/the/unpacked/onnxruntime package. onnxruntime-gpu
#   1.31 is built for CUDA 13 and cuDNN 9; their libraries come from NVIDIA's pip wheels
#   (nvidia-cuda-runtime, nvidia-cublas, nvidia-cudnn-cu13, nvidia-cufft, ...), which a PyTorch
#   CUDA install already has: every nvidia/*/lib folder of $PYTHON's site-packages is put on
#   LD_LIBRARY_PATH.
# - onnx, numpy, torch (with CUDA), pytest; pytest-xdist and scipy are used when present.
# - CUDA must really start: a session that fell back to the CPU stops the check
#   (GPU_CHECK_ALLOW_CPU=1 goes on anyway: a dry run of the script on a machine without a GPU).
#
# Outputs in OUT_DIR: facts.txt, tests.log, bench-cuda.txt, bench-cuda.json, and where the serve
# extra is installed bench-serve-cuda.txt (onnxscope serve on CUDA, issue 13).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out/gpu_check}"
mkdir -p "$out"
py="${PYTHON:-python3}"
test_budget_s="${GPU_CHECK_TEST_S:-240}"  # seconds for the tests
bench_args="${GPU_CHECK_BENCH_ARGS:-}"       # extra arguments for bench/suite.py

if [[ -n "${ORT_GPU_WHEEL:-}" ]]; then
    ORT_GPU_SITE="${TMPDIR:-/tmp}/onnxscope-ort-gpu"
    "$py" -m pip install -q --no-index --no-deps --no-compile --target "$ORT_GPU_SITE" "$ORT_GPU_WHEEL"
fi
if [[ -n "${ORT_GPU_SITE:-}" ]]; then
    export PYTHONPATH="$ORT_GPU_SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
nvlibs="$(find "$site/nvidia" -mindepth 2 -maxdepth 3 -type d -name lib 2>/dev/null | paste -sd: || true)"
export LD_LIBRARY_PATH="${nvlibs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# onnxscope itself, from this checkout (no index needed: setuptools only)
if ! "$py" -c 'import onnxscope.converters' 2>/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null
fi

{
    echo "date: $(date -u)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$py" - <<'EOF'
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch

import onnxscope

print(f"python {sys.version.split()[0]}, onnx {onnx.__version__}, numpy {np.__version__}")
print(f"onnxruntime {ort.__version__} from {ort.__file__}")
print(f"available providers: {ort.get_available_providers()}")
print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")
scope = onnxscope.LinearScope("samples/00_default/tinynet.onnx", providers="cuda")
dims = [d.dim_value or 1 for d in scope.model.graph.input[0].type.tensor_type.shape.dim]
x = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
it = scope.interpret(x)
used = it._s.mask.get_providers()
print(f"tinynet on {used}: {it.verify()}")
masks_on = {v.device_name() for v in it._mask_values.values()}
print(f"mask values live on: {sorted(masks_on)}")
if used[0] != "CUDAExecutionProvider" and os.environ.get("GPU_CHECK_ALLOW_CPU") != "1":
    sys.exit("CUDA did not start: see the line above; the check stops here.")
EOF
} 2>&1 | tee "$out/facts.txt"
[[ ${PIPESTATUS[0]} -eq 0 ]] || exit 1

echo "== benchmark suite on CUDA"
"$py" bench/suite.py --device cuda --json "$out/bench-cuda.json" $bench_args 2>&1 \
    | tee "$out/bench-cuda.txt" || echo "the benchmark failed: see $out/bench-cuda.txt"

# The tests that exercise the runtime path, with ONNXSCOPE_DEVICE=cuda as every LinearScope's
# default device (the references they compare with stay on the CPU).
workers=""
if "$py" -c 'import xdist' 2>/dev/null; then workers="-n ${GPU_CHECK_WORKERS:-2}"; fi
echo "== tests on CUDA (budget ${test_budget_s} s)"
# one pytest process per file: every CUDA session holds its own cuBLAS/cuDNN handles, and a whole
# suite's worth alive in one process ran out of them (CUBLAS_STATUS_ALLOC_FAILED) on an H200
tests_rc=0
deadline=$((SECONDS + test_budget_s))
: > "$out/tests.log"
# the serve tests need the serve extra (starlette, uvicorn, grpcio, tritonclient): run where present
serve_tests=""
if "$py" -c 'import starlette, uvicorn, grpc, tritonclient.http, prometheus_client' 2>/dev/null; then
    serve_tests="tests/test_serve.py"
fi
for file in tests/test_loading.py tests/test_readings.py tests/test_reading_graphs.py $serve_tests \
    tests/test_ops.py tests/test_torch_models.py tests/test_conv_geometry.py; do
    left=$((deadline - SECONDS))
    if ((left <= 0)); then
        echo "$file: not run (out of time)" | tee -a "$out/tests.log"
        tests_rc=124
        continue
    fi
    set +e
    ONNXSCOPE_DEVICE=cuda timeout "$left" "$py" -m pytest -q -p no:cacheprovider $workers "$file" \
        >> "$out/tests.log" 2>&1
    rc=$?
    set -e
    echo "$file: exit status $rc; $(tail -n 1 "$out/tests.log")"
    ((rc == 0)) || tests_rc=$rc
done
echo "tests exit status: $tests_rc"

if [[ -n "$serve_tests" ]]; then
    echo "== onnxscope serve on CUDA (bench/bench_serve.py, short)"
    timeout 240 "$py" bench/bench_serve.py --device cuda --repeat 10 --seconds 5 2>&1 \
        | tee "$out/bench-serve-cuda.txt" || echo "the serve benchmark failed: see its file"
fi

exit "$tests_rc"
