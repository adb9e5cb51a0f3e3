"""HTTP routes of the shared-memory and trace extensions (Triton's ``http_server.cc``
``HandleSystemSharedMemory``, ``HandleCudaSharedMemory``, ``HandleTrace``).

Only the JSON translation lives here; the managers (``shared_memory.py``,
``trace.py``) do the work and raise Triton's errors, which the app maps to
HTTP statuses as for every route.
"""
from __future__ import annotations

import base64
import binascii

from ..errors import InternalError, InvalidArgument
from ..shared_memory import CUDA, CUDA_IPC_HANDLE_BYTES, SYSTEM
from . import http_codec

_NOT_UINT = "attempt to access JSON non-unsigned-integer as unsigned-integer"
_NOT_STRING = "attempt to access JSON non-string as string"


async def shared_memory(app, request, kind: str, region: str, action: str):
    """``/v2/{system,cuda}sharedmemory[/region/{region}]/{status,register,unregister}``."""
    from .http_app import JSON, Response, json_response, method_not_allowed

    denied = app._restricted("shared-memory", request)
    if denied:
        return denied
    if request.method != ("GET" if action == "status" else "POST"):
        return method_not_allowed()
    manager = app.dataplane.shared_memory
    if action == "status":
        return json_response([_status_row(r) for r in manager.status(region, kind)])
    if action == "unregister":
        await app._blocking(manager.unregister, region, kind)
        return Response(200, content_type=JSON)
    manager.check_allowed()
    if not region:
        raise InvalidArgument(f"'region name' is necessary to register "
                              f"{'system' if kind == SYSTEM else 'cuda'} shared memory region")
    body = await app.read_body(request)
    document = http_codec.loads(body) if body else {}
    if not isinstance(document, dict):
        raise InternalError("attempt to access JSON non-object as object")
    if kind == SYSTEM:
        if "key" not in document:
            raise InvalidArgument("Shared memory register request has no 'key' field")
        key = _string(document["key"])
        offset = _uint(document.get("offset", 0))
        if "byte_size" not in document:
            raise InvalidArgument("Shared memory register request has no 'byte_size' field")
        byte_size = _uint(document["byte_size"])
        await app._blocking(manager.register_system, region, key, offset, byte_size)
    else:
        if "raw_handle" not in document:
            raise InvalidArgument("Shared memory register request has no 'raw_handle' field")
        handle = document["raw_handle"]
        b64 = _string(handle.get("b64") if isinstance(handle, dict) else None)
        byte_size = _uint(document.get("byte_size"))
        device_id = _uint(document.get("device_id"))
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument("'raw_handle' must be a valid base64 encoded "
                                  "cudaIpcMemHandle_t") from None
        if len(raw) != CUDA_IPC_HANDLE_BYTES:
            raise InvalidArgument("'raw_handle' must be a valid base64 encoded cudaIpcMemHandle_t")
        await app._blocking(manager.register_cuda, region, raw, device_id, byte_size)
    return Response(200, content_type=JSON)


def _status_row(region) -> dict:
    if region.kind == CUDA:
        return {"name": region.name, "device_id": region.device_id,
                "byte_size": region.byte_size}
    return {"name": region.name, "key": region.key, "offset": region.offset,
            "byte_size": region.byte_size}


async def trace_setting(app, request, model: str = ""):
    """``GET|POST /v2/trace/setting`` and ``/v2/models/{model}/trace/setting``."""
    from .http_app import json_response, method_not_allowed

    denied = app._restricted("trace", request)
    if denied:
        return denied
    if request.method not in ("GET", "POST"):
        return method_not_allowed()
    values = {}
    if request.method == "POST":
        body = await app.read_body(request)
        document = http_codec.loads(body) if body else {}
        if not isinstance(document, dict):
            raise InternalError("attempt to access JSON non-object as object")
        for key, value in document.items():
            # null clears a field; trace_level takes an array, the others a string
            if value is None:
                values[key] = []
            elif isinstance(value, list):
                values[key] = [_string(v) for v in value]
            else:
                values[key] = [_string(value)]
    settings = await app._blocking(app.dataplane.trace_setting, model, values)
    return json_response({key: value if key == "trace_level" else value[0]
                          for key, value in settings.items()})


def _string(value) -> str:
    if not isinstance(value, str):
        raise InternalError(_NOT_STRING)
    return value


def _uint(value) -> int:
    if type(value) is not int or value < 0:
        raise InternalError(_NOT_UINT)
    return value
