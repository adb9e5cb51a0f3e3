"""Calls a Python model makes that need an answer: metrics set-up and values, model control."""
from __future__ import annotations

import logging
import threading

from ...errors import TritonError

log = logging.getLogger("triton_grpc_server.backends.python")


def serve_call(backend, stub, call_id: int, op: str, args) -> None:
    if op in ("load_model", "unload_model"):
        # Loading may take long (and may start other instance processes): not on the reader.
        threading.Thread(target=_answer, args=(backend, stub, call_id, op, args),
                         daemon=True, name=f"python-{op}").start()
    else:
        _answer(backend, stub, call_id, op, args)


def _answer(backend, stub, call_id, op, args) -> None:
    try:
        value = (True, _run(backend, stub, op, args))
    except TritonError as exc:
        value = (False, exc.message)
    except Exception as exc:
        value = (False, f"{type(exc).__name__}: {exc}")
    try:
        stub.send(("reply", call_id) + value)
    except (OSError, EOFError):
        pass


def _run(backend, stub, op, args):
    from .custom_metrics import REGISTRY

    if op == "metric_family":
        return REGISTRY.family(stub.host, *args)
    if op == "metric":
        return REGISTRY.metric(stub.host, *args)
    if op == "metric_value":
        return REGISTRY.value(*args)
    dataplane = backend.dataplane()
    if dataplane is None:
        raise TritonError("the server's data plane is not running")
    if op == "is_model_ready":
        return dataplane.model_ready(args[0], args[1])
    if op == "load_model":
        name, config, files = args
        parameters = {}
        if config:
            parameters["config"] = config
        for path, content in (files or {}).items():
            parameters[path] = content
        dataplane.load_model(name, parameters)
        return None
    if op == "unload_model":
        dataplane.unload_model(args[0], {"unload_dependents": args[1]})
        return None
    raise TritonError(f"unknown call '{op}'")
