#!/usr/bin/env bash
# Build the sdist and the wheel, install the wheel into a fresh virtual
# environment outside the source tree and serve the example models from there.
#
#   bash scripts/wheel_smoke.sh            (make wheel-smoke; CI runs it after the tests)
#
# Steps, each failing the script when it goes wrong:
#   1. python -m build: sdist + wheel; the wheel must carry the compiled
#      extensions and the generated protobuf modules;
#   2. a fresh venv in a temp dir; the wheel with NO extra: starting the server
#      must fail with a message naming the missing [onnxruntime] extra;
#   3. the wheel with [onnxruntime,metrics]: scripts/wheel_smoke_client.py serves
#      a copy of examples/models and checks one tritonclient.grpc inference, one
#      tritonclient.http inference (when the package has an HTTP frontend), the
#      metrics endpoint and a clean SIGTERM shutdown.
# Downloads come from pip's cache when it holds them (PIP_CACHE_DIR is honoured).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tgs-wheel-smoke.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
step() { printf '[wheel-smoke %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [ ! -f "$ROOT/examples/models/simple/1/model.onnx" ]; then
    echo "error: examples/models is not generated: run 'make models' first" >&2
    exit 1
fi

step "python -m build (sdist + wheel)"
if ! "$PY" -m build --outdir "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1; then
    tail -40 "$WORK/build.log"
    exit 1
fi
SDIST="$(ls "$WORK"/dist/*.tar.gz)"
WHEEL="$(ls "$WORK"/dist/*.whl)"
"$PY" - "$WHEEL" "$SDIST" <<'EOF'
import sys, tarfile, zipfile

wheel, sdist = sys.argv[1], sys.argv[2]
names = zipfile.ZipFile(wheel).namelist()
need = ["triton_grpc_server/_proto/model_config_pb2.py",
        "triton_grpc_server/_proto/grpc_service_pb2.py",
        "triton_grpc_server/_proto/grpc_service_pb2_grpc.py"]
missing = [n for n in need if n not in names]
for ext in ("wire", "cuda"):
    if not any(n.startswith(f"triton_grpc_server/_ext/{ext}.") and n.endswith(".so") for n in names):
        missing.append(f"triton_grpc_server/_ext/{ext}*.so")
source = tarfile.open(sdist).getnames()
for suffix in ("protos/grpc_service.proto", "protos/model_config.proto", "ext/wire.pyx",
               "ext/cuda.pyx", "ext/cuda_build.py"):
    if not any(n.endswith(suffix) for n in source):
        missing.append(f"sdist:{suffix}")
if missing:
    sys.exit("error: the built distributions lack " + ", ".join(missing))
print(f"  wheel {wheel.rsplit('/', 1)[1]}: {len(names)} files, extensions and protos present")
EOF

step "fresh venv outside the source tree"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
pip_install() {
    # pip's notes about configured package locations that do not exist here are noise
    "$VPY" -m pip install -q --disable-pip-version-check --no-compile "$@" 2>&1 | { grep -v "^WARNING: Location " || true; }
}
# The client the tests use, at the version the test extra pins.
TRITONCLIENT_VERSION="$(sed -n 's/.*"tritonclient\[[a-z,]*\]==\([0-9.]*\)".*/\1/p' "$ROOT/pyproject.toml" | head -1)"
pip_install "$WHEEL" "tritonclient[grpc,http]==${TRITONCLIENT_VERSION:-2.73.0}"
cp -r "$ROOT/examples/models" "$WORK/models"
cd "$WORK"  # nothing below may see the checkout

step "no extra: the server must name the missing [onnxruntime] extra"
if "$VPY" -c "import onnxruntime" 2>/dev/null; then
    echo "error: onnxruntime is installed without the [onnxruntime] extra" >&2
    exit 1
fi
set +e
"$VPY" -m triton_grpc_server --model-repository "$WORK/models" --allow-metrics false \
    --grpc-address 127.0.0.1 --grpc-port 0 >"$WORK/no_extra.log" 2>&1
rc=$?
set -e
if [ "$rc" -eq 0 ] || ! grep -q "\[onnxruntime\]" "$WORK/no_extra.log"; then
    echo "error: expected a failed start naming the [onnxruntime] extra (exit $rc):" >&2
    cat "$WORK/no_extra.log" >&2
    exit 1
fi
grep -m1 "onnxruntime" "$WORK/no_extra.log" | sed 's/^/  /'

step "[onnxruntime,metrics]: serve, infer over gRPC and HTTP, scrape, SIGTERM"
pip_install "${WHEEL}[onnxruntime,metrics]"
"$VPY" "$ROOT/scripts/wheel_smoke_client.py" --models "$WORK/models" --source-root "$ROOT"
step "passed"
# the three stages above (build, missing extra, serve from the fresh venv), as a runner's summary
echo "wheel-smoke: 3 passed, 0 failed"
