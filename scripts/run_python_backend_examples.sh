#!/usr/bin/env bash
# Run python_backend's example clients (HTTP, hard-wired to localhost:8000 and :8002)
# unchanged against this server, inside a private network namespace so that those
# fixed ports collide with nothing else on the machine (needs root: unshare -n).
#
# Usage: sudo scripts/run_python_backend_examples.sh PYTHON_BACKEND_EXAMPLES_DIR
#   PYTHON_BACKEND_EXAMPLES_DIR: python_backend's examples/ (add_sub, auto_complete,
#   bls, custom_metrics, pytorch), copied verbatim; this script downloads nothing.
# The clients need numpy, tritonclient[http] and requests; PYTHON picks the interpreter
# (default .venv/bin/python). Exit status: the number of failed clients.
set -u
E=$(cd "${1:?examples dir}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d /tmp/pb_examples.XXXXXX)
M=$WORK/models
mkdir -p $M/add_sub/1 $M/bls_sync/1 $M/bls_async/1 $M/pytorch/1 \
         $M/nobatch_auto_complete/1 $M/batch_auto_complete/1 $M/custom_metrics/1
cp "$E/add_sub/model.py" $M/add_sub/1/ && cp "$E/add_sub/config.pbtxt" $M/add_sub/
cp "$E/bls/sync_model.py" $M/bls_sync/1/model.py && cp "$E/bls/sync_config.pbtxt" $M/bls_sync/config.pbtxt
cp "$E/bls/async_model.py" $M/bls_async/1/model.py && cp "$E/bls/async_config.pbtxt" $M/bls_async/config.pbtxt
cp "$E/pytorch/model.py" $M/pytorch/1/ && cp "$E/pytorch/config.pbtxt" $M/pytorch/
cp "$E/auto_complete/nobatch_model.py" $M/nobatch_auto_complete/1/model.py
cp "$E/auto_complete/batch_model.py" $M/batch_auto_complete/1/model.py
cp "$E/custom_metrics/model.py" $M/custom_metrics/1/model.py
cp "$E/custom_metrics/config.pbtxt" $M/custom_metrics/config.pbtxt

exec unshare -n bash -s "$ROOT" "$PYTHON" "$E" "$WORK" <<'INNER'
ROOT=$1 PYTHON=$2 E=$3 WORK=$4
ip link set lo up
cd "$ROOT"
"$PYTHON" -m triton_grpc_server --model-repository "$WORK/models" >"$WORK/server.log" 2>&1 &
pid=$!
for _ in $(seq 240); do
    curl -s -o /dev/null -w '%{http_code}' localhost:8000/v2/health/ready | grep -q 200 && break
    sleep 0.5
done
failed=0
for c in add_sub/client.py auto_complete/client.py bls/sync_client.py bls/async_client.py \
         custom_metrics/client.py; do
    log="$WORK/$(echo "$c" | tr / _).log"
    (cd "$E/$(dirname "$c")" && timeout 120 "$PYTHON" "$(basename "$c")") >"$log" 2>&1
    rc=$?
    [[ $rc -ne 0 ]] && failed=$((failed + 1))
    printf '%-26s rc=%-3s %s\n' "$c" "$rc" "$(tail -n 1 "$log")"
done
kill "$pid"; wait "$pid"
echo "logs: $WORK"
exit "$failed"
INNER
