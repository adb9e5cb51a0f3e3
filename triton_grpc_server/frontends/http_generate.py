"""Triton's generate extension: ``/generate`` (one JSON answer) and ``/generate_stream``
(Server-Sent Events, one ``data: {...}`` event per response, for decoupled models).

The body is a flat JSON object: keys naming model inputs are tensors (a scalar
or a flat array, shaped by the model's dims with its ``-1`` filled in), the
other keys, and those of a nested ``parameters`` object, are request
parameters. The answer carries ``model_name``, ``model_version``, the
response's parameters and every output by name (a one-element output as a
scalar). Texts follow Triton's ``GenerateRequestClass``.
"""
from __future__ import annotations

import asyncio
from typing import Optional

import numpy as np
import orjson

from ..errors import InternalError, InvalidArgument, TritonError, http_status
from ..senders import StreamSender
from . import http_codec
from .http_codec import InferInput, InferRequest

SSE = b"text/event-stream; charset=utf-8"
ONE_RESPONSE = ("generate expects model to produce exactly 1 response, use generate stream for "
                "model that generates various number of responses")


def build_request(document: dict, model: str, version: str, metadata, max_input_size: int):
    inputs_meta = {t.name: t for t in metadata.inputs}
    inputs, raw, parameters = [], [], {}
    consumed = 0

    def visit(node: dict, nested: bool) -> None:
        nonlocal consumed
        for key, value in node.items():
            if key == "parameters" and not nested:
                if key in inputs_meta:
                    raise InvalidArgument(f"Keyword '{key}' for nested schema also given as "
                                          "input tensor name")
                if not isinstance(value, dict):
                    raise InternalError(f"Expected JSON object for keyword: '{key}': attempt "
                                        "to access JSON non-object as object")
                visit(value, True)
            elif key in inputs_meta:
                tensor, size = _tensor(key, value, inputs_meta[key], consumed, max_input_size)
                consumed += size
                inputs.append(tensor[0])
                raw.append(tensor[1])
            elif key == "id" and not nested:
                continue  # the request id, read below
            elif isinstance(value, (str, bool, int, float)):
                parameters[key] = value
            else:
                raise InvalidArgument(f"parameter '{key}' has invalid type. It should be either "
                                      "'int', 'bool', or 'string'.")
    visit(document, False)
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise http_codec.parse_error("id", "attempt to access JSON non-string as string")
    return InferRequest(model_name=model, model_version=version, id=request_id,
                        parameters=parameters, inputs=inputs, outputs=[], raw_input_contents=raw)


def _tensor(name: str, value, meta, consumed: int, max_input_size: int):
    data = value if isinstance(value, list) else [value]
    count = len(data)
    datatype = meta.datatype
    dtype = http_codec.NUMPY_DTYPES.get(datatype)
    if dtype is None or datatype in ("FP16", "BF16"):
        raise InvalidArgument(f"input '{name}' has unsupported datatype {datatype}")
    size = count * (dtype.itemsize if datatype != "BYTES" else 1)
    if size + consumed > max_input_size:
        raise InvalidArgument(
            f"request size of {consumed} bytes with input '{name}' of size {size} bytes exceeds "
            f"the maximum allowed input size of {max_input_size}. Use --http-max-input-size to "
            "increase the limit.")
    shape = list(meta.shape)
    remaining = count
    for dim in reversed(shape):  # fixed dims first, as Triton, then the wildcards
        if dim != -1:
            if dim == 0 or remaining % dim:
                raise InvalidArgument(f"The schema can not convert input '{name}' to tensor with "
                                      "proper shape")
            remaining //= dim
    for index in range(len(shape) - 1, -1, -1):
        if shape[index] == -1:
            shape[index], remaining = remaining, 1
    buffer = http_codec._json_tensor(name, datatype, shape, data, max_input_size)
    return (InferInput(name, datatype, shape, {}), buffer), size


def response_document(response) -> dict:
    document: dict = {}
    if response.id:
        document["id"] = response.id
    document["model_name"] = response.model_name
    document["model_version"] = response.model_version
    document.update(response.parameters)
    for out in response.outputs:
        if out.datatype in ("FP16", "BF16"):
            raise InvalidArgument(f"sending {out.datatype} data via JSON is not supported. Please "
                                  "use the binary data format for output")
        if out.datatype == "BYTES":
            values = [v.decode("utf-8", errors="replace") for v in http_codec.split_bytes(out.data)]
        else:
            values = np.ascontiguousarray(out.data).reshape(-1).tolist()
        document[out.name] = values[0] if len(values) == 1 else values
    return document


def _error_body(exc: BaseException) -> tuple[int, bytes]:
    if isinstance(exc, TritonError):
        return http_status(exc.status), orjson.dumps({"error": exc.message})
    return 500, orjson.dumps({"error": f"internal error: {type(exc).__name__}: {exc}"})


async def generate(app, request, model: str, version: str, streaming: bool, send) -> None:
    """Answer one generate / generate_stream request; ``send`` is the ASGI send. Errors
    raised before the model runs are the caller's to answer."""
    if request.headers.get("content-encoding", "identity") not in ("", "identity"):
        raise InvalidArgument("Unsupported content-encoding, only 'identity' is supported.")
    metadata = app.dataplane.model_metadata(model, version)
    body = await app.read_body(request)
    document = http_codec.loads(body) if body else {}
    if not isinstance(document, dict):
        raise InternalError("attempt to access JSON non-object as object")
    infer_request = build_request(document, model, version, metadata, app.max_input_size)

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    infer_request.sender = StreamSender(loop, queue.put_nowait, infer_request)
    finished = False
    watch = asyncio.ensure_future(request.receive())  # answers only when the client goes

    def on_message(done) -> None:
        if not finished and not done.cancelled() and done.exception() is None \
                and done.result().get("type") == "http.disconnect":
            infer_request.cancel()  # queued responses stop; the backend sees the flag
    watch.add_done_callback(on_message)
    try:
        app.dataplane.enqueue(infer_request)
        if streaming:
            await _stream(queue, send)
        else:
            await _unary(queue, send)
    finally:
        finished = True
        watch.cancel()


async def _next(queue) -> tuple[Optional[object], bool]:
    value, final, _ = await queue.get()
    return value, final


async def _unary(queue, send) -> None:
    responses, error = [], None
    while True:
        value, final = await _next(queue)
        if isinstance(value, BaseException):
            error = error or value
        elif value is not None:
            responses.append(value)
        if final:
            break
    if error is not None:
        status, body = _error_body(error)
    elif len(responses) != 1:
        status, body = 500, orjson.dumps({"error": ONE_RESPONSE})
    else:
        try:
            status, body = 200, orjson.dumps(response_document(responses[0]))
        except Exception as exc:
            status, body = _error_body(exc)
    await _start(send, status, b"application/json")
    await send({"type": "http.response.body", "body": body})


async def _start(send, status: int, content_type: bytes) -> None:
    # No Content-Length: the server sends the body chunked, as Triton does for generate.
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type)]})


async def _stream(queue, send) -> None:
    started = False
    while True:
        value, final = await _next(queue)
        if isinstance(value, BaseException):
            status, event = _error_body(value)
        elif value is not None:
            try:
                status, event = 200, orjson.dumps(response_document(value))
            except Exception as exc:
                status, event = _error_body(exc)
        else:
            status, event = 200, None
        if not started:  # the first answer decides the status, as Triton's StartResponse
            await _start(send, status, SSE)
            started = True
        if event is not None:
            await send({"type": "http.response.body", "body": b"data: " + event + b"\n\n",
                        "more_body": not final})
        if final:
            if event is None:
                await send({"type": "http.response.body", "body": b""})
            return
