"""The interface every backend implements.

A backend is loaded once per model version (:class:`Backend`) and runs work
on one or more instances (:class:`BackendInstance`), one per
``instance_group`` entry count. The scheduler owns the instances and gives
each batch to a free one; instances of one model may run concurrently on
different threads, but one instance never runs two batches at once.

Inputs reach ``execute`` as numpy arrays: zero-copy, read-only views of the
request bytes for fixed-size types, object arrays of ``bytes`` for BYTES.
Outputs are returned as numpy arrays (or any buffer-protocol object with a
``shape``); BYTES outputs as object arrays of ``bytes``/``str``.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence


class Backend(abc.ABC):
    #: ``default_model_filename`` when the config sets none.
    default_model_filename: str = ""

    @classmethod
    def auto_complete_config(cls, config, model_path: Path) -> None:
        """Fill what ``config`` (a ``ModelConfig`` message) leaves out from the model file.

        Called before :meth:`__init__` unless auto-complete is disabled. Must not
        contradict what the config states; raise ``TritonError`` if the model
        and the config disagree.
        """

    @classmethod
    def gpu_by_default(cls) -> bool:
        """True when instances without an explicit kind should go on the GPU: a GPU is
        usable here and this backend can run on it (Triton's KIND_AUTO rule)."""
        return False

    def __init__(self, config, version: int, model_path: Path, context: "BackendContext"):
        """Load the model file of one version (``model_path``)."""
        self.config = config
        self.version = version
        self.model_path = model_path
        self.context = context

    @abc.abstractmethod
    def create_instance(self, index: int, kind: str, device_id: int) -> "BackendInstance":
        """Create instance ``index`` of ``kind`` ("KIND_CPU", "KIND_GPU") on ``device_id``."""

    def unload(self) -> None:
        """Release what the model holds beyond its instances."""


class BackendInstance(abc.ABC):
    name: str = ""

    @abc.abstractmethod
    def execute(self, inputs: Mapping[str, Any], output_names: Sequence[str],
                parameters: Mapping[str, Any]) -> Mapping[str, Any]:
        """Run one (possibly batched) request and return the named outputs."""

    def close(self) -> None:
        """Release the instance's sessions, streams and buffers."""


class BackendContext:
    """What the server hands a backend at load time."""

    def __init__(self, model_name: str, settings: Optional[Any] = None):
        self.model_name = model_name
        self.settings = settings
