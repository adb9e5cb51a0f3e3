#!/usr/bin/env bash
# Run Triton's shared-memory QA tests, unchanged, against this server, the
# way Triton's qa/L0_shared_memory/test.sh and qa/L0_grpc/test.sh run them:
# one fresh server per test case, started with the same flags, the test file
# run by name, and its test_results.txt checked for the expected count.
#
# Usage:
#   scripts/run_triton_shm_qa.sh TRITON_SERVER_REPO [CLIENT_TYPES]
#
#   TRITON_SERVER_REPO  a checkout of triton-inference-server/server (its qa/
#                       directory is copied to a temp dir; nothing is downloaded)
#   CLIENT_TYPES        "grpc http" (default) or one of them; the unregister-in-flight
#                       cases watch the server over HTTP and run only with http listed
#
# The tests talk to localhost:8001 (and :8000) as written, so each server and
# test runs inside a private network namespace (unshare -rn): nothing else on
# the machine is disturbed and nothing else can answer.
#
# Models: L0_shared_memory uses "simple" (examples/models/simple) and, for
# test_large_shm_register_offset, "<backend>_int32_int32_int32" add/sub models;
# here BACKENDS=onnx, served by a copy of "simple" under that name.
# Environment: PYTHON (default .venv/bin/python; needs tritonclient[grpc,http],
# psutil, ml_dtypes), LOG_DIR (default: a new temp dir).
# Exit status: the number of failed cases.
set -u

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    sed -n '2,/^set -u/p' "$0" | sed -e '/^set -u/d' -e 's/^# \{0,1\}//'
    exit 2
fi
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
TRITON=$(cd "$1" && pwd) || exit 2
CLIENT_TYPES=${2:-grpc http}
PYTHON=${PYTHON:-$REPO_ROOT/.venv/bin/python}
LOG_DIR=${LOG_DIR:-$(mktemp -d /tmp/triton_shm_qa.XXXXXX)}
export PYTHON TRITON REPO_ROOT LOG_DIR CLIENT_TYPES

mkdir -p "$LOG_DIR/qa"
cp -r "$TRITON/qa/common" "$TRITON/qa/L0_shared_memory" "$TRITON/qa/L0_grpc" "$LOG_DIR/qa/"
mkdir -p "$LOG_DIR/qa/python_models"
cp -r "$TRITON/qa/python_models/execute_delayed_model" "$LOG_DIR/qa/python_models/"
SHM_DIR="$LOG_DIR/qa/L0_shared_memory"
rm -rf "$SHM_DIR/models" && mkdir -p "$SHM_DIR/models" "$SHM_DIR/models_large_offset"
cp -r "$REPO_ROOT/examples/models/simple" "$SHM_DIR/models/"
cp -r "$REPO_ROOT/examples/models/simple" "$SHM_DIR/models_large_offset/onnx_int32_int32_int32"
sed -i 's/^name: "simple"/name: "onnx_int32_int32_int32"/' \
    "$SHM_DIR/models_large_offset/onnx_int32_int32_int32/config.pbtxt"

exec unshare -rn bash -s <<'INNER'
set -u
ip link set lo up 2>/dev/null || true
FAILS=0
SERVER_PID=0

start_server() {  # $1: log file; rest: server args
    local log=$1; shift
    "$PYTHON" -m triton_grpc_server "$@" --allow-metrics=false >"$log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 120); do
        if "$PYTHON" -c "import tritonclient.grpc as g, sys; sys.exit(0 if g.InferenceServerClient('localhost:8001').is_server_ready() else 1)" 2>/dev/null; then
            return 0
        fi
        kill -0 $SERVER_PID 2>/dev/null || break
        sleep 0.5
    done
    echo "server failed to start:"; cat "$log"; SERVER_PID=0; return 1
}

stop_server() {
    kill $SERVER_PID; wait $SERVER_PID
    local rc=$?
    if [[ $rc -ne 0 ]]; then echo "   server shut down non-gracefully (rc $rc)"; FAILS=$((FAILS + 1)); fi
}

check_results() {  # test_results.txt: {"total": N, "errors": E, "failures": F}
    "$PYTHON" - <<'PY'
import json, sys
r = json.load(open("test_results.txt"))
sys.exit(0 if (r["total"], r["errors"], r["failures"]) == (1, 0, 0) else 1)
PY
}

run_case() {  # $1: test id, $2: client type, $3: models dir, $4: check results (1/0), rest: server args
    local test=$1 client=$2 models=$3 check=$4; shift 4
    local log="$LOG_DIR/${test//./_}.$client"
    rm -f test_results.txt
    start_server "$log.server.log" --model-repository="$models" --log-verbose=1 "$@" || { FAILS=$((FAILS + 1)); return; }
    if CLIENT_TYPE=$client "$PYTHON" $TEST_FILE "$test" >"$log.client.log" 2>&1 \
            && { [[ $check == 0 ]] || check_results; }; then
        echo "PASS  $test ($client)"
    else
        echo "FAIL  $test ($client): $log.client.log"; tail -5 "$log.client.log" | sed 's/^/      /'
        FAILS=$((FAILS + 1))
    fi
    stop_server
}

HELP=$("$PYTHON" -m triton_grpc_server --help)
EXTRA=()
[[ $HELP == *--backend-directory* ]] && EXTRA+=(--backend-directory=/nonexistent)

cd "$LOG_DIR/qa/L0_shared_memory"
TEST_FILE=shared_memory_test.py
for client in $CLIENT_TYPES; do
    run_case SharedMemoryTest.test_client_shm_disabled_by_default $client "$(pwd)/models" 1 "${EXTRA[@]}"
done
for t in test_invalid_create_shm test_valid_create_set_register test_unregister_before_register \
         test_unregister_after_register test_reregister_after_register \
         test_unregister_after_inference test_register_after_inference test_too_big_shm \
         test_mixed_raw_shm test_unregisterall test_infer_offset_out_of_bound \
         test_infer_byte_size_out_of_bound test_infer_integer_overflow test_register_out_of_bound \
         test_register_reserved_names test_register_invalid_shm_key test_python_client_leak; do
    for client in $CLIENT_TYPES; do
        run_case SharedMemoryTest.$t $client "$(pwd)/models" 1 "${EXTRA[@]}" --allow-client-shm=true
    done
done
# test.sh does not check test_results.txt for this one
export BACKENDS=onnx
for client in $CLIENT_TYPES; do
    run_case SharedMemoryTest.test_large_shm_register_offset $client \
        "$(pwd)/models_large_offset" 0 "${EXTRA[@]}" --allow-client-shm=true
done

# Unregister while requests are in flight: a Python-backend "simple" that sleeps 15 s
# (qa/python_models/execute_delayed_model); the tests watch status over HTTP.
mkdir -p python_models/simple/1
cp ../python_models/execute_delayed_model/model.py python_models/simple/1/
cp ../python_models/execute_delayed_model/config.pbtxt python_models/simple/
if [[ $CLIENT_TYPES == *http* ]]; then
    for t in test_unregister_shm_during_inference_single_req \
             test_unregister_shm_during_inference_multiple_req test_unregister_shm_after_inference; do
        for client in $CLIENT_TYPES; do
            run_case "TestSharedMemoryUnregister.${t}_${client}" $client "$(pwd)/python_models" 1 \
                "${EXTRA[@]}" --allow-client-shm=true
        done
    done
fi

# qa/L0_grpc/test.sh: the aio client test against the example repository
cd "$LOG_DIR/qa/L0_grpc"
TEST_FILE=python_grpc_aio_test.py
log="$LOG_DIR/python_grpc_aio_test"
start_server "$log.server.log" --model-repository="$REPO_ROOT/examples/models" "${EXTRA[@]}" --allow-client-shm=true
if [[ $SERVER_PID != 0 ]]; then
    if "$PYTHON" $TEST_FILE -v >"$log.client.log" 2>&1; then
        echo "PASS  python_grpc_aio_test.py"
    else
        echo "FAIL  python_grpc_aio_test.py: $log.client.log"
        grep -E "^(FAIL|ERROR):|Ran |FAILED" "$log.client.log" | sed 's/^/      /'
        FAILS=$((FAILS + 1))
    fi
    stop_server
fi
echo "logs: $LOG_DIR; failed: $FAILS"
exit $FAILS
INNER
