#!/usr/bin/env bash
# Run python_backend's examples unchanged (their model.py, config.pbtxt and clients)
# against this server, with the repository laid out as each example's README says.
#
#   scripts/run_python_backend_examples.sh PYTHON_BACKEND_CHECKOUT [CLIENT_EXAMPLES_DIR]
#
# The clients talk to localhost:8000/8001/8002, so the server and the clients run in
# a private network namespace (unshare -rn) when one can be made; otherwise those
# ports must be free. CLIENT_EXAMPLES_DIR (tritonclient's src/python/examples) adds
# simple_grpc_custom_repeat.py against repeat_int32. The HTTP clients need the HTTP
# frontend; custom_metrics/client.py needs the 'requests' package.
set -u
PB=$(realpath "$1"); CLIENTS=${2:+$(realpath "$2")}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$HERE/.venv/bin/python}
if [ -z "${TGS_IN_NAMESPACE:-}" ] && unshare -rn true 2>/dev/null; then
    TGS_IN_NAMESPACE=1 exec unshare -rn "$0" "$@"
fi
[ -n "${TGS_IN_NAMESPACE:-}" ] && "$PY" - <<'PYEOF'
import fcntl, socket, struct  # bring up lo in the new namespace (no iproute2 needed)
s = socket.socket(); req = struct.pack("16sh", b"lo", 0)
flags = struct.unpack("16sh", fcntl.ioctl(s, 0x8913, req))[1] | 1
fcntl.ioctl(s, 0x8914, struct.pack("16sh", b"lo", flags))
PYEOF
REPO=$(mktemp -d); E=$PB/examples
put() { mkdir -p "$REPO/$1/1"; cp "$2" "$REPO/$1/1/model.py"; [ -n "${3:-}" ] && cp "$3" "$REPO/$1/config.pbtxt"; true; }
put add_sub "$E/add_sub/model.py" "$E/add_sub/config.pbtxt"
put pytorch "$E/pytorch/model.py" "$E/pytorch/config.pbtxt"
put repeat_int32 "$E/decoupled/repeat_model.py" "$E/decoupled/repeat_config.pbtxt"
put square_int32 "$E/decoupled/square_model.py" "$E/decoupled/square_config.pbtxt"
put bls_sync "$E/bls/sync_model.py" "$E/bls/sync_config.pbtxt"
put bls_async "$E/bls/async_model.py" "$E/bls/async_config.pbtxt"
put bls_decoupled_sync "$E/bls_decoupled/sync_model.py" "$E/bls_decoupled/sync_config.pbtxt"
put bls_decoupled_async "$E/bls_decoupled/async_model.py" "$E/bls_decoupled/async_config.pbtxt"
put custom_metrics "$E/custom_metrics/model.py" "$E/custom_metrics/config.pbtxt"
put nobatch_auto_complete "$E/auto_complete/nobatch_model.py"
put batch_auto_complete "$E/auto_complete/batch_model.py"
cd "$HERE"
"$PY" -m triton_grpc_server --model-repository "$REPO" > "$REPO/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 300); do
    "$PY" -c "import sys, tritonclient.grpc as g; sys.exit(not g.InferenceServerClient('localhost:8001').is_server_ready())" 2>/dev/null && break
    sleep 0.3
done
FAILED=0
run() { echo "=== $*"; if "$PY" "$@" > "$REPO/client.log" 2>&1; then tail -1 "$REPO/client.log"; else cat "$REPO/client.log"; FAILED=1; fi; }
run "$E/decoupled/repeat_client.py"
run "$E/decoupled/square_client.py"
[ -n "$CLIENTS" ] && run "$CLIENTS/simple_grpc_custom_repeat.py"
run "$E/add_sub/client.py"
run "$E/auto_complete/client.py"
run "$E/bls/sync_client.py"
run "$E/bls/async_client.py"
run "$E/bls_decoupled/sync_client.py"
run "$E/bls_decoupled/async_client.py"
run "$E/custom_metrics/client.py"
kill -INT $SERVER; wait $SERVER
[ $FAILED = 0 ] && echo "all examples passed" || { echo "server log: $REPO/server.log"; exit 1; }
