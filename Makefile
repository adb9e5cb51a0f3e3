# One-command entry points; see README.md.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8001
HTTP_PORT ?= 8000
SERVE_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup setup-serve compile debug models serve test test-fast bench bench-quick gpu-check clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Editable install: generates the protobuf modules and compiles ext/ in place.
# setup-serve installs only what serving needs (pip's progress shown: the first run
# downloads onnxruntime); setup adds the test extras (torch, TensorRT runtime, clients).
setup-serve: $(PY)
	$(PY) -m pip install --progress-bar on -e ".[onnxruntime,metrics]"

setup: $(PY)
	$(PY) -m pip install -q -e ".[onnxruntime,metrics,test]"

compile: $(PY)
	$(PY) setup.py -q build_ext --inplace

debug: $(PY)
	TGS_DEBUG=1 $(PY) setup.py -q build_ext --inplace --force

# The example models are built with the onnx helper API (a serving dependency).
MAKE_MODELS = $(PY) examples/make_models.py examples/models

models: setup-serve
	$(MAKE_MODELS)

serve: setup-serve
	$(MAKE_MODELS)
	$(PY) -m triton_grpc_server --model-repository examples/models --grpc-port $(PORT) \
		--http-port $(HTTP_PORT) --allow-client-shm true $(SERVE_ARGS)

test: setup
	$(MAKE_MODELS)
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

test-fast: setup
	$(MAKE_MODELS)
	$(PY) -m pytest -q -ra -x -m "not slow" $(PYTEST_ARGS)

# Peers (KServe, MLServer) run from their own venvs in benchmarks/.venvs, made on first use.
bench: setup
	$(PY) benchmarks/run.py --peers kserve,mlserver

bench-quick: setup
	$(PY) benchmarks/run.py --quick --rss 0 --peers kserve,mlserver --servers ours-aio-cython,kserve,mlserver \
		--workloads "add_sub C=1,add_sub C=16,identity_4m C=4"

# Build sdist + wheel, install the wheel in a fresh venv outside the tree, serve and infer
# (after `make models`; CI runs it after `make test`, so setup is not repeated).
.PHONY: wheel-smoke
wheel-smoke:
	bash scripts/wheel_smoke.sh

gpu-check:
	bash scripts/gpu_check.sh

clean:
	rm -rf build dist *.egg-info triton_grpc_server/_proto/*_pb2*.py \
	       triton_grpc_server/_ext/*.so ext/*.c ext/*.html
