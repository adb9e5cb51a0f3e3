"""Backend registry: names to import strings, imported only when a model needs one.

Importing the package never imports onnxruntime, TensorRT or torch.
"""
from __future__ import annotations

import importlib

from ..errors import InvalidArgument

# backend name -> "module:Class" (imported when a model needs it) or the class itself
BACKENDS: dict[str, object] = {
    "onnxruntime": "triton_grpc_server.backends.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "triton_grpc_server.backends.tensorrt:TensorRTBackend",
    "pytorch": "triton_grpc_server.backends.pytorch:PyTorchBackend",
    "ensemble": "triton_grpc_server.scheduler.ensemble:EnsembleBackend",
    "python": "triton_grpc_server.backends.python_backend.backend:PythonBackend",
}

# Triton platform name -> backend name
PLATFORMS: dict[str, str] = {
    "onnxruntime_onnx": "onnxruntime",
    "tensorrt_plan": "tensorrt",
    "pytorch_libtorch": "pytorch",
    "ensemble": "ensemble",
}

# model file name -> backend name, used when config.pbtxt names neither
FILE_HINTS: dict[str, str] = {
    "model.onnx": "onnxruntime",
    "model.plan": "tensorrt",
    "model.pt": "pytorch",
    "model.py": "python",
}


# --backend-config settings: {backend name or "" for all: {setting: value}}; one per process,
# as Triton hands each backend its configuration once.
_BACKEND_CONFIG: dict[str, dict[str, str]] = {}


def set_backend_config(parsed: dict[str, dict[str, str]]) -> None:
    _BACKEND_CONFIG.clear()
    _BACKEND_CONFIG.update(parsed)


def configure_backends(settings) -> None:
    """Process-wide settings the backends read: ``--backend-config``, the pinned pool size."""
    from .. import gpu
    from ..settings import parse_backend_config

    set_backend_config(parse_backend_config(settings.backend_config))
    gpu.set_pinned_pool_size(settings.pinned_memory_pool_byte_size)


def backend_config(name: str) -> dict[str, str]:
    """The settings for backend ``name``: the global ones, overridden by its own."""
    return {**_BACKEND_CONFIG.get("", {}), **_BACKEND_CONFIG.get(name, {})}


def register_backend(name: str, target) -> None:
    """Make ``backend: "<name>"`` load ``target``: a ``Backend`` subclass, or "module:Class"
    imported when a model first needs it. Tests add their own backends this way."""
    BACKENDS[name] = target


def backend_name_for(platform: str, backend: str) -> str:
    if backend:
        if backend not in BACKENDS:
            raise InvalidArgument(f"unknown backend '{backend}'")
        return backend
    if platform:
        if platform not in PLATFORMS:
            raise InvalidArgument(f"unknown platform '{platform}'")
        return PLATFORMS[platform]
    raise InvalidArgument("must specify 'platform' or 'backend'")


def platform_for(backend: str) -> str:
    for platform, name in PLATFORMS.items():
        if name == backend:
            return platform
    return ""


def load_backend_class(name: str):
    target = BACKENDS[name]
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
