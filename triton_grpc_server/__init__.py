"""triton_grpc_server: an inference server speaking NVIDIA Triton's gRPC protocol.

Importing the package is cheap: backends (ONNX Runtime, TensorRT, PyTorch)
and the compiled extensions load only when a model or a frontend needs them.
"""
from ._version import __version__

__all__ = ["__version__"]
