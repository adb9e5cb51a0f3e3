"""Triton's ONNX Runtime options in config.pbtxt: the memory parameters ``enable_mem_arena``,
``enable_mem_pattern`` (session options) and ``memory.enable_memory_arena_shrinkage`` (a run
option), with the backends' boolean syntax, and ``optimization { graph { level } }``."""
from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import models
from models import error_of
from triton_grpc_server._proto import model_config_pb2 as mc
from triton_grpc_server.backends import onnxruntime as ort_backend
from triton_grpc_server.errors import InvalidArgument


def _config(**parameters) -> mc.ModelConfig:
    config = mc.ModelConfig(name="m")
    for key, value in parameters.items():
        config.parameters[key.replace("__", ".")].string_value = value
    return config


@pytest.mark.parametrize("text, expected", [("1", True), ("true", True), ("ON", True),
                                            ("0", False), ("False", False), ("off", False)])
def test_boolean_syntax_is_the_backends(text, expected):
    options = ort_backend._session_options(_config(enable_mem_arena=text, enable_mem_pattern=text))
    assert options.enable_cpu_mem_arena is expected
    assert options.enable_mem_pattern is expected


def test_defaults_are_onnx_runtimes():
    options = ort_backend._session_options(_config())
    assert options.enable_cpu_mem_arena is True and options.enable_mem_pattern is True
    assert ort_backend._run_options(_config()) is None


def test_a_value_that_is_no_boolean_names_model_and_parameter():
    with pytest.raises(InvalidArgument, match="parameter 'enable_mem_arena' of model 'm': "
                                              "failed to convert 'maybe' to boolean"):
        ort_backend._session_options(_config(enable_mem_arena="maybe"))


def test_arena_shrinkage_is_a_run_option():
    options = ort_backend._run_options(_config(memory__enable_memory_arena_shrinkage="cpu:0"))
    assert options.get_run_config_entry(ort_backend.ARENA_SHRINKAGE) == "cpu:0"


def _parameters(**values) -> str:
    return "".join(f'parameters {{ key: "{k.replace("__", ".")}" value {{ string_value: "{v}" }} }}\n'
                   for k, v in values.items())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    models.identity_model(repo, "no_arena", "FP32", dims=(1024,),
                          extra=_parameters(enable_mem_arena="0", enable_mem_pattern="off"))
    models.identity_model(repo, "shrinking", "FP32", dims=(1024,),
                          extra=_parameters(memory__enable_memory_arena_shrinkage="cpu:0"))
    models.identity_model(repo, "not_a_bool", "FP32",
                          extra=_parameters(enable_mem_arena="maybe"))
    yield from models.serve(repo, "--model-control-mode", "explicit",
                            "--load-model", "no_arena", "--load-model", "shrinking")


@pytest.mark.parametrize("model", ["no_arena", "shrinking"])
def test_models_with_memory_parameters_serve_exact_answers(server, model):
    data = np.random.default_rng(1).random((3, 1024), dtype=np.float32)
    with server.client() as client:
        for _ in range(5):  # several runs: shrinking between them must not disturb later ones
            tensor = grpcclient.InferInput("INPUT0", list(data.shape), "FP32")
            tensor.set_data_from_numpy(data)
            result = client.infer(model, [tensor])
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)


def test_a_bad_boolean_fails_the_load_and_says_why(server):
    with server.client() as client:
        _, message = error_of(client.load_model, "not_a_bool")
        assert "failed to convert 'maybe' to boolean" in message, message
        assert "not_a_bool" in message, message
        assert not client.is_model_ready("not_a_bool")
        assert client.is_model_ready("no_arena")


@pytest.mark.parametrize("level, expected", [(None, "ORT_ENABLE_ALL"), (0, "ORT_ENABLE_ALL"),
                                             (-1, "ORT_ENABLE_BASIC"), (1, "ORT_ENABLE_EXTENDED"),
                                             (2, "ORT_DISABLE_ALL")])
def test_graph_optimization_level_uses_tritons_numbers(level, expected):
    config = _config()
    if level is not None:
        config.optimization.graph.level = level
    options = ort_backend._session_options(config)
    assert options.graph_optimization_level.name == expected
