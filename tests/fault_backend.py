"""A test backend that fails on request: ``faults``.

Inputs ``MODE`` (INT32 [1]) and ``VALUE`` (INT32 [1]); ``OUT`` (INT32 [1]) is
``VALUE * 2``. MODE 0 answers at once; 1 raises from ``execute`` (the
instance fails); 2 holds the instance for ``HOLD_S`` seconds, then answers;
3 answers from a thread after ``HOLD_S`` seconds without holding the instance,
and first appends one byte to the file named by ``TGS_FAULTS_SEEN`` (so a test
knows how many requests the backend has accepted).

Servers load it (and the ``repeat`` backend) through :func:`plugin_env`.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from triton_grpc_server.backends.base import Backend, BackendInstance
from triton_grpc_server.scheduler.base import record_execution

HOLD_S = 1.5

CONFIG = '''name: "{name}"
backend: "faults"
max_batch_size: {max_batch_size}
instance_group [ {{ kind: KIND_CPU count: {count} }} ]
input [
  {{ name: "MODE" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "VALUE" data_type: TYPE_INT32 dims: [ 1 ] }}
]
output [ {{ name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
{extra}
'''

SITECUSTOMIZE = '''
import sys
sys.path.insert(0, {tests!r})
from triton_grpc_server import backends
backends.register_backend("faults", "fault_backend:FaultBackend")
backends.register_backend("repeat", "repeat_backend:RepeatBackend")
'''


def _answer(request) -> None:
    value = np.asarray(request.inputs["VALUE"]).reshape(request.inputs["VALUE"].shape)
    request.respond({"OUT": (value * 2).astype(np.int32)})


class FaultInstance(BackendInstance):
    def execute(self, requests) -> None:
        modes = [int(np.asarray(r.inputs["MODE"]).reshape(-1)[0]) for r in requests]
        if 1 in modes:
            raise RuntimeError("instance failed on purpose")
        if 2 in modes:
            time.sleep(HOLD_S)
        record_execution(requests, 0, 0, 0)
        for request, mode in zip(requests, modes):
            if mode == 3:
                seen = os.environ.get("TGS_FAULTS_SEEN")
                if seen:
                    with open(seen, "ab") as out:
                        out.write(b".")
                threading.Timer(HOLD_S, _answer, args=(request,)).start()
            else:
                _answer(request)


class FaultBackend(Backend):
    default_model_filename = "model.faults"

    def create_instance(self, index, kind, device_id):
        return FaultInstance()


def write_model(repo: Path, name: str, count: int = 1, max_batch_size: int = 0,
                extra: str = "") -> None:
    model_dir = Path(repo) / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "1" / "model.faults").write_text("faults\n")
    (model_dir / "config.pbtxt").write_text(
        CONFIG.format(name=name, count=count, max_batch_size=max_batch_size, extra=extra))


def plugin_env(plugin_dir: Path) -> dict:
    plugin_dir = Path(plugin_dir)
    plugin_dir.mkdir(parents=True, exist_ok=True)
    tests = str(Path(__file__).resolve().parent)
    (plugin_dir / "sitecustomize.py").write_text(SITECUSTOMIZE.format(tests=tests))
    path = os.pathsep.join(p for p in (str(plugin_dir), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}
