# syntax=docker/dockerfile:1
# triton_grpc_server images; see docs/deploy.md.
#
#   docker build --target cpu -t triton-grpc-server:cpu .     (the default target)
#   docker build --target gpu -t triton-grpc-server:gpu .
#   docker run --rm -p 8000-8002:8000-8002 -v "$PWD/examples/models:/models:ro" \
#       triton-grpc-server:cpu --model-repository=/models
#
# The arguments are Triton's flags (the entry point also drops a leading
# "tritonserver", so Triton launch lines work as they are). Size goal for the
# CPU image: at most 400 MB.

ARG PYTHON_VERSION=3.11
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04

# ---------------------------------------------------------------------------
# gpu-wheel: the same wheel for the CUDA base's Python (3.12 on Ubuntu 24.04).
FROM ${CUDA_IMAGE} AS gpu-wheel
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-dev python3-venv gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/build && /opt/build/bin/pip install --no-cache-dir build==1.2.2.post1
WORKDIR /src
COPY . .
RUN /opt/build/bin/python -m build --wheel --outdir /dist .

# ---------------------------------------------------------------------------
# gpu: NVIDIA CUDA runtime base, TensorRT's lean runtime wheel, NVML GPU metrics.
FROM ${CUDA_IMAGE} AS gpu
ARG DEBIAN_FRONTEND=noninteractive
ARG EXTRAS=tensorrt,onnxruntime,metrics,gpu-metrics
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:${PATH}
COPY --from=gpu-wheel /dist/ /tmp/dist/
# hadolint ignore=DL3008,DL3013
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && wheel="$(ls /tmp/dist/*.whl)" \
    && /opt/venv/bin/pip install --no-cache-dir "${wheel}[${EXTRAS}]" \
    && rm -rf /tmp/dist \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/triton triton \
    && mkdir -p /models && chown triton:triton /models
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/tgs-entrypoint
USER 10001
WORKDIR /home/triton
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('TGS_HTTP_PORT', '8000'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/v2/health/ready', timeout=2).status != 200)"]
ENTRYPOINT ["/usr/local/bin/tgs-entrypoint"]
CMD ["--model-repository=/models"]
# ---------------------------------------------------------------------------
# cpu-wheel: compile the Cython extensions and generate the protos into a wheel.
# The CUDA extension links the static cudart from PyPI, so no toolkit is needed.
FROM python:${PYTHON_VERSION}-slim-bookworm AS cpu-wheel
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir build==1.2.2.post1
WORKDIR /src
COPY . .
RUN python -m build --wheel --outdir /dist .

# ---------------------------------------------------------------------------
# cpu: slim Python, ONNX Runtime on the CPU, Prometheus metrics.
FROM python:${PYTHON_VERSION}-slim-bookworm AS cpu
ARG EXTRAS=onnxruntime,metrics
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=cpu-wheel /dist/ /tmp/dist/
# The package is the wheel built above; its own metadata bounds its dependencies.
# hadolint ignore=DL3013
RUN wheel="$(ls /tmp/dist/*.whl)" \
    && pip install --no-cache-dir "${wheel}[${EXTRAS}]" \
    && rm -rf /tmp/dist \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/triton triton \
    && mkdir -p /models && chown triton:triton /models
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/tgs-entrypoint
USER 10001
WORKDIR /home/triton
# HTTP/REST, gRPC, Prometheus metrics: Triton's ports
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('TGS_HTTP_PORT', '8000'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/v2/health/ready', timeout=2).status != 200)"]
ENTRYPOINT ["/usr/local/bin/tgs-entrypoint"]
CMD ["--model-repository=/models"]

