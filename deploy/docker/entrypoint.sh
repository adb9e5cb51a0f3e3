#!/bin/sh
# Container entry point: Triton's flags go straight to the server.
#   docker run IMAGE --model-repository=/models --log-verbose=1
# A leading "tritonserver" word is dropped, so launch lines written for Triton's
# image (KServe's runtime, Helm charts: "tritonserver --model-store=...") work unchanged.
set -e
if [ "${1:-}" = "tritonserver" ]; then
    shift
fi
exec python -m triton_grpc_server "$@"
