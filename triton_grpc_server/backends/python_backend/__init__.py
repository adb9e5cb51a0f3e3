"""Triton's Python backend: ``model.py`` with ``TritonPythonModel``, one process per instance."""
from .backend import PythonBackend

__all__ = ["PythonBackend"]
