#!/usr/bin/env bash
# GPU check for the CUDA layer, the TensorRT and PyTorch backends (issue 4).
# One call of at most 5 minutes on a lent H100 (Python 3.12, torch, Cython, nvcc there).
#
# HOW TO RUN
#   1. Here, in the repo root, once (about 55 MB of wheels; .whl/ is gitignored):
#        scripts/gpu_check.sh --download-wheels
#      which runs, for each of tritonclient==2.73.0 python-rapidjson
#      grpcio-health-checking==1.81.1 protobuf==6.33.6 nvidia-cuda-runtime==13.0.96
#      nvidia-cuda-crt==13.0.88 tensorrt_lean_cu13_bindings==11.4.0.106
#      tensorrt_lean_cu13_libs==11.4.0.106 perf-analyzer==2.60.0:
#        python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#          --implementation cp --platform manylinux_2_{17,24,27,28,31,34,35,38}_x86_64 \
#          --platform manylinux2014_x86_64 -d .whl NAME==VERSION
#      and make sure the generated protos exist (python setup.py build_py, or any
#      editable install, writes triton_grpc_server/_proto/*_pb2*.py).
#   2. The device tool's run, with
#        carry:   [".whl", "triton_grpc_server/_proto"]
#        command: bash scripts/gpu_check.sh
#        timeout_s: 420
#      Everything it prints is in output_tail; $OUT/gpu_check.log and
#      $OUT/gpu_check_summary.json come back as files.
#
# Without a GPU it fails (exit 2) with the reason; it never passes vacuously.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

WHEELS=(tritonclient==2.73.0 python-rapidjson grpcio-health-checking==1.81.1 protobuf==6.33.6
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88
        tensorrt_lean_cu13_bindings==11.4.0.106 tensorrt_lean_cu13_libs==11.4.0.106
        perf-analyzer==2.60.0)

if [[ "${1:-}" == "--download-wheels" ]]; then
    mkdir -p .whl
    plats=()
    for n in 17 24 27 28 31 34 35 38; do plats+=(--platform "manylinux_2_${n}_x86_64"); done
    for w in "${WHEELS[@]}"; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp "${plats[@]}" --platform manylinux2014_x86_64 -d .whl "$w" || exit 1
    done
    ls -la .whl; du -sh .whl
    exit 0
fi

OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
exec > >(tee "$LOG") 2>&1
export PYTHONUNBUFFERED=1
start=$(date +%s)
step() { echo; echo "##### $* (t+$(( $(date +%s) - start ))s)"; }

step "device"
if ! nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; then
    echo "gpu_check: FAIL: no NVIDIA GPU or driver here (nvidia-smi failed); this check needs one"
    exit 2
fi
python3 --version

step "carried wheels"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "gpu_check: FAIL: installing .whl/*.whl"; exit 3; }
    export PYTHONPATH=/tmp/site
    export PATH=/tmp/site/bin:$PATH
else
    echo "no .whl/ carried: tritonclient, TensorRT lean and perf_analyzer checks will fail"
fi
export PYTHONPATH=$ROOT:${PYTHONPATH:-}
python3 -c "import triton_grpc_server._proto.model_config_pb2" \
    || { echo "gpu_check: FAIL: generated protos missing (carry triton_grpc_server/_proto)"; exit 3; }

step "build the CUDA extension (static cudart from the carried nvidia-cuda-runtime wheel)"
rm -f triton_grpc_server/_ext/cuda*.so
if ! python3 scripts/gpu_build.py cuda; then
    echo "wheel headers not usable; retrying with TGS_CUDA_HOME=/usr/local/cuda"
    TGS_CUDA_HOME=/usr/local/cuda python3 scripts/gpu_build.py cuda || { echo "gpu_check: FAIL: build"; exit 4; }
fi
# The wire codec too, so the served path is the product's (the server falls back without it).
python3 scripts/gpu_build.py wire || echo "warning: ext/wire.pyx did not build; serving with the Python codec"
python3 - <<'EOF' || { echo "gpu_check: FAIL: the CUDA layer sees no GPU"; exit 2; }
from triton_grpc_server._ext import cuda
print("device_count", cuda.device_count(), "runtime", cuda.runtime_version(), "driver", cuda.driver_version())
reason = cuda.unavailable_reason()
if reason:
    raise SystemExit(reason)
EOF
ldd triton_grpc_server/_ext/cuda*.so | sed 's/^/  /'

status=0
step "GPU-marked tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu -rs \
    tests/test_cuda_layer.py tests/test_tensorrt_backend.py tests/test_pytorch_backend.py || status=1
# Other GPU-marked tests in the tree (none may be skipped for lack of a GPU here).
others=$(grep -l "mark.gpu" tests/test_*.py | grep -v -e test_cuda_layer -e test_tensorrt_backend -e test_pytorch_backend -e test_shared_memory || true)
if [[ -n "$others" ]]; then
    timeout 60 python3 -m pytest -q -p no:cacheprovider -m gpu -rs $others || status=1
fi

step "CUDA shared memory: a client process registers device buffers by IPC handle, infers, reads back"
timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu -rs \
    tests/test_shared_memory.py -k cuda_shared_memory_cross_process || status=1

step "serve, compare, measure"
timeout 200 python3 scripts/gpu_check.py || status=1

step "done"
if [[ $status -ne 0 ]]; then
    echo "gpu_check: FAILED (see above)"
else
    echo "gpu_check: all passed"
fi
exit $status
