"""A decoupled test backend with the interface of Triton's ``repeat`` backend (``repeat_int32``).

Inputs ``IN`` (INT32 [n]), ``DELAY`` (UINT32 [n]) and ``WAIT`` (UINT32 [1]);
for each element ``i`` it waits ``DELAY[i]`` ms and sends a response with
``OUT = IN[i]`` and ``IDX = i``; after the last one it waits ``WAIT`` ms and
sends the final flag without a response. So 0, 1 or N responses per request.
``DELAY`` with another length than ``IN`` is an error (sent as the request's
final answer, as Triton's backend does). Each request is answered from its own
thread, so the instance takes the next request while earlier ones still
stream; a cancelled request stops with CANCELLED before its next response.

Servers load it through :func:`plugin_env` (a ``sitecustomize`` that calls
``backends.register_backend``).
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from triton_grpc_server.backends.base import Backend, BackendInstance
from triton_grpc_server.errors import InvalidArgument
from triton_grpc_server.scheduler.base import RequestCancelled, record_execution

CONFIG = '''name: "{name}"
backend: "repeat"
max_batch_size: 0
model_transaction_policy {{ decoupled: true }}
instance_group [ {{ kind: KIND_CPU count: {count} }} ]
input [
  {{ name: "IN" data_type: TYPE_INT32 dims: [ -1 ] }},
  {{ name: "DELAY" data_type: TYPE_UINT32 dims: [ -1 ] }},
  {{ name: "WAIT" data_type: TYPE_UINT32 dims: [ 1 ] }}
]
output [
  {{ name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] }}
]
'''

SITECUSTOMIZE = '''
import sys
sys.path.insert(0, {tests!r})
from triton_grpc_server import backends
backends.register_backend("repeat", "repeat_backend:RepeatBackend")
'''


class RepeatInstance(BackendInstance):
    def __init__(self, name: str):
        self.name = name

    def execute(self, requests) -> None:
        record_execution(requests, 0, 0, 0)  # answered later, from the threads below
        for request in requests:
            threading.Thread(target=self._answer, args=(request,), daemon=True,
                             name=f"{self.name}-answer").start()

    @staticmethod
    def _answer(request) -> None:
        values = np.asarray(request.inputs["IN"]).reshape(-1)
        delays = np.asarray(request.inputs["DELAY"]).reshape(-1)
        wait = int(np.asarray(request.inputs["WAIT"]).reshape(-1)[0])
        if len(delays) != len(values):
            request.respond_error(InvalidArgument(
                f"expected IN and DELAY shape to match, got {list(values.shape)} and "
                f"{list(delays.shape)}"))
            return
        for index, (value, delay) in enumerate(zip(values, delays)):
            time.sleep(int(delay) / 1000.0)
            if request.cancelled:
                request.respond_error(RequestCancelled())
                return
            request.respond({"OUT": np.array([value], np.int32),
                             "IDX": np.array([index], np.uint32)}, final=False)
        time.sleep(wait / 1000.0)
        request.respond(None, final=True)


class RepeatBackend(Backend):
    default_model_filename = "model.repeat"

    def create_instance(self, index, kind, device_id):
        return RepeatInstance(f"{self.config.name}_{index}")


def write_model(repo: Path, name: str = "repeat_int32", count: int = 1) -> None:
    model_dir = Path(repo) / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "1" / "model.repeat").write_text("repeat\n")
    (model_dir / "config.pbtxt").write_text(CONFIG.format(name=name, count=count))


def plugin_env(plugin_dir: Path) -> dict:
    """The environment that makes a server process register the ``repeat`` backend."""
    plugin_dir = Path(plugin_dir)
    plugin_dir.mkdir(parents=True, exist_ok=True)
    tests = str(Path(__file__).resolve().parent)
    (plugin_dir / "sitecustomize.py").write_text(SITECUSTOMIZE.format(tests=tests))
    path = os.pathsep.join(p for p in (str(plugin_dir), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}
