"""Where instances go when the config does not say: Triton's KIND_AUTO rule."""
from __future__ import annotations

import pytest

from triton_grpc_server._proto import model_config_pb2 as mc
from triton_grpc_server.repository.config import fill_defaults


def _config(*groups):
    config = mc.ModelConfig(name="m")
    for kind, count, gpus in groups:
        config.instance_group.add(kind=kind, count=count, gpus=gpus)
    return config


def test_no_instance_group_on_a_gpu_backend_goes_to_the_gpu():
    config = _config()
    fill_defaults(config, gpu_default=True)
    (group,) = config.instance_group
    assert group.kind == mc.ModelInstanceGroup.KIND_GPU and group.count == 1


def test_no_instance_group_without_a_gpu_gets_two_cpu_instances():
    config = _config()
    fill_defaults(config, gpu_default=False)
    (group,) = config.instance_group
    assert group.kind == mc.ModelInstanceGroup.KIND_CPU and group.count == 2


def test_kind_auto_follows_the_same_rule_and_explicit_kinds_stay():
    config = _config((mc.ModelInstanceGroup.KIND_AUTO, 0, []),
                     (mc.ModelInstanceGroup.KIND_CPU, 3, []),
                     (mc.ModelInstanceGroup.KIND_MODEL, 1, []),
                     (mc.ModelInstanceGroup.KIND_GPU, 2, [1, 3]))
    fill_defaults(config, gpu_default=True)
    kinds = [(g.kind, g.count, list(g.gpus)) for g in config.instance_group]
    assert kinds[0][0] == mc.ModelInstanceGroup.KIND_GPU
    assert kinds[1] == (mc.ModelInstanceGroup.KIND_CPU, 3, [])
    assert kinds[2] == (mc.ModelInstanceGroup.KIND_MODEL, 1, [])
    assert kinds[3] == (mc.ModelInstanceGroup.KIND_GPU, 2, [1, 3])   # gpus honoured
    config = _config((mc.ModelInstanceGroup.KIND_AUTO, 0, []))
    fill_defaults(config, gpu_default=False)
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU


def test_onnxruntime_without_cuda_provider_stays_on_cpu():
    ort = pytest.importorskip("onnxruntime")
    from triton_grpc_server import gpu
    from triton_grpc_server.backends.onnxruntime import OnnxRuntimeBackend

    expected = "CUDAExecutionProvider" in ort.get_available_providers() and \
        gpu.device_count() > 0
    assert OnnxRuntimeBackend.gpu_by_default() is expected


@pytest.mark.gpu
def test_onnx_model_without_instance_group_is_placed_on_the_gpu(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from triton_grpc_server import gpu

    if "CUDAExecutionProvider" not in ort.get_available_providers() or gpu.device_count() == 0:
        pytest.skip("needs onnxruntime-gpu and a CUDA device")
    import models

    repo = tmp_path / "models"
    models.add_sub_onnx(repo / "auto" / "1" / "model.onnx")
    handle = models.start(repo)
    try:
        client = handle.client()
        group = client.get_model_config("auto").config.instance_group[0]
        from tritonclient.grpc import model_config_pb2 as client_mc

        assert client_mc.ModelInstanceGroup.Kind.Name(group.kind) == "KIND_GPU"
        client.close()
    finally:
        handle.stop()
    assert "placed on KIND_GPU" in handle.log()
