# One-command entry points; see README.md.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8001
HTTP_PORT ?= 8000
SERVE_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup setup-serve compile debug models serve test test-fast bench bench-quick gpu-check clean \
	fuzz fuzz-asan fuzz-seeds soak

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

# Rebuilding ext/ in place needs what pyproject's isolated build had (an editable install
# leaves none of it in the venv): Cython and the static CUDA runtime from PyPI.
BUILD_EXT_REQUIREMENTS = "Cython>=3.0" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-crt==13.0.*"

compile: $(PY)
	$(PY) -m pip install -q $(BUILD_EXT_REQUIREMENTS)
	$(PY) setup.py -q build_ext --inplace

debug: $(PY)
	$(PY) -m pip install -q $(BUILD_EXT_REQUIREMENTS)
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

# Coverage-guided fuzzing (atheris): each harness in tests/fuzz/ for FUZZ_SECONDS, FUZZ_JOBS at a
# time, from its seeds and kept regression inputs; new corpus entries and crash inputs go to build/fuzz/.
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= 1
FUZZ_ARGS ?=
FUZZ_HARNESSES := $(sort $(wildcard tests/fuzz/fuzz_*.py))
fuzz:
	@bash tests/fuzz/run_harnesses.sh $(PY) $(FUZZ_SECONDS) $(FUZZ_JOBS) "$(FUZZ_ARGS)" $(FUZZ_HARNESSES)
fuzz-seeds:
	$(PY) tests/fuzz/make_seeds.py

# The same harnesses with the Cython wire codec built with AddressSanitizer and bounds checks
# (gcc's libasan preloaded into the interpreter); the optimized build is put back afterwards.
WIRE_SO = $(wildcard triton_grpc_server/_ext/wire*.so)
fuzz-asan:
	@mkdir -p build/fuzz
	$(PY) -m pip install -q $(BUILD_EXT_REQUIREMENTS)
	cp $(WIRE_SO) build/fuzz/wire-optimized.so
	$(PY) tests/fuzz/build_asan.py
	ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 LD_PRELOAD="$$(gcc -print-file-name=libasan.so)" \
		$(MAKE) fuzz PY=$(PY) FUZZ_SECONDS=$(FUZZ_SECONDS); status=$$?; \
		cp build/fuzz/wire-optimized.so $(WIRE_SO); exit $$status

# Soak: gRPC + HTTP clients on a model mix while models are reloaded (SOAK_MINUTES, default 10).
# After `make setup` (it needs the test extras); CI runs it after `make test`, so setup is not
# repeated. It builds its own models in a temporary repository.
SOAK_MINUTES ?= 10
soak:
	$(PY) benchmarks/soak.py --minutes $(SOAK_MINUTES)
