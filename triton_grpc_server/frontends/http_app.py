"""Triton's REST API as a raw ASGI application: routing, bodies, status codes.

No web framework sits on the hot path: the ASGI server (uvicorn with httptools)
parses HTTP, this module matches Triton's route regexes, reads the body once,
hands it to the codec (``http_codec``) and the data plane, and writes the
response. Every error becomes ``{"error": "<text>"}`` with Triton's status
mapping in one place (:meth:`TritonHttpApp._error`).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import zlib
from typing import Optional

import orjson

from ..errors import InternalError, InvalidArgument, TritonError, Unsupported, http_status
from . import http_codec, http_generate, http_shm_trace, http_views

log = logging.getLogger(__name__)

# Triton's route patterns (its HTTPAPIServer), matched against the whole path.
MODEL_ROUTE = re.compile(r"/v2/models/([^/]+)(?:/versions/([0-9]+))?"
                         r"(?:/(infer|generate|generate_stream|ready|config|stats|trace/setting))?")
SERVER_ROUTE = re.compile(r"/v2(?:/health/(live|ready))?")
REPOSITORY_ROUTE = re.compile(r"/v2/repository(?:/([^/]+))?/(index|models/([^/]+)/(load|unload))")
SYSTEM_SHM_ROUTE = re.compile(r"/v2/systemsharedmemory(?:/region/([^/]+))?/(status|register|unregister)")
CUDA_SHM_ROUTE = re.compile(r"/v2/cudasharedmemory(?:/region/([^/]+))?/(status|register|unregister)")
TRACE_ROUTE = re.compile(r"/v2/trace/setting")

JSON = b"application/json"
OCTET_STREAM = b"application/octet-stream"
INFER_HEADER_LENGTH = "inference-header-content-length"


class ClientGone(Exception):
    """The client closed the connection before its request body arrived."""


class HttpRequest:
    __slots__ = ("method", "path", "headers", "receive")

    def __init__(self, scope, receive):
        self.method = scope["method"]
        self.path = scope["path"]
        # Header names arrive lower-cased (ASGI); a repeated header keeps its last value.
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.receive = receive


class Response:
    __slots__ = ("status", "parts", "content_type", "headers")

    def __init__(self, status: int = 200, parts=(), content_type: Optional[bytes] = JSON,
                 headers=()):
        self.status = status
        self.parts = list(parts)
        self.content_type = content_type
        self.headers = list(headers)


def json_response(document, status: int = 200) -> Response:
    return Response(status, [orjson.dumps(document)])


def error_response(status: int, message: str, headers=()) -> Response:
    return Response(status, [orjson.dumps({"error": message})], headers=headers)


def method_not_allowed() -> Response:
    return error_response(405, "Method Not Allowed")


class TritonHttpApp:
    """The ASGI callable. ``executor`` runs the data plane's blocking calls (loads, unloads)."""

    def __init__(self, dataplane, settings, executor=None, restrictions=None):
        self.dataplane = dataplane
        self.max_input_size = settings.http_max_input_size
        from .transport_options import HeaderForwarder

        self.forward_headers = HeaderForwarder.for_http(settings)
        self.executor = executor
        # ``restrictions.Restrictions`` (--http-restricted-api): ``refusal(group, headers)``
        # names the header a request lacks; None serves every API to everyone.
        self.restrictions = restrictions

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind == "http":
            await self.handle(HttpRequest(scope, receive), send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def handle(self, request: HttpRequest, send) -> None:
        try:
            response = await self.route(request, send)
        except ClientGone:
            return  # nobody to answer
        except Exception as exc:
            response = self._error(exc)
        if response is not None:  # None: the handler wrote its (streamed) response itself
            await send_response(send, response)

    @staticmethod
    def _error(exc: Exception) -> Response:
        if isinstance(exc, TritonError):
            headers = getattr(exc, "http_headers", ())
            return error_response(http_status(exc.status), exc.message, headers)
        log.exception("internal error in the HTTP frontend")
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    def _restricted(self, category: str, request: HttpRequest) -> Optional[Response]:
        if self.restrictions is None:
            return None
        header = self.restrictions.refusal(category, request.headers)
        if header is None:
            return None
        return error_response(403, f"This API is restricted, expecting header '{header}'")

    # -- routing (Triton's order) -----------------------------------------
    async def route(self, request: HttpRequest, send) -> Optional[Response]:
        path = request.path
        if path == "/v2/models/stats":
            return await self.model_stats(request, "", "")
        if path == "/v2/logging":
            return await self.log_settings(request)
        match = MODEL_ROUTE.fullmatch(path)
        if match:
            model, version, kind = match.group(1), match.group(2) or "", match.group(3) or ""
            if kind == "infer":
                return await self.infer(request, model, version)
            if kind == "ready":
                return self.model_ready(request, model, version)
            if kind == "":
                return self.model_metadata(request, model, version)
            if kind == "config":
                return await self.model_config(request, model, version)
            if kind == "stats":
                return await self.model_stats(request, model, version)
            if kind in ("generate", "generate_stream"):
                return await self.generate(request, model, version, kind == "generate_stream",
                                           send)
            if kind == "trace/setting" and not version:
                return await http_shm_trace.trace_setting(self, request, model)
        if path == "/v2":
            return self.server_metadata(request)
        match = SERVER_ROUTE.fullmatch(path)
        if match:
            return self.server_health(request, match.group(1))
        for pattern, kind in ((SYSTEM_SHM_ROUTE, "system"), (CUDA_SHM_ROUTE, "cuda")):
            match = pattern.fullmatch(path)
            if match:
                return await http_shm_trace.shared_memory(self, request, kind, match.group(1) or "",
                                                          match.group(2))
        match = REPOSITORY_ROUTE.fullmatch(path)
        if match:
            repository, kind, model, action = match.groups()
            if kind == "index":
                return await self.repository_index(request, repository or "")
            return await self.repository_control(request, repository or "", model, action)
        if TRACE_ROUTE.fullmatch(path):
            return await http_shm_trace.trace_setting(self, request)
        return error_response(404, "Not Found")

    async def log_settings(self, request) -> Response:
        """``GET|POST /v2/logging``: the transport-free LogSettings (``logs.py``)."""
        from .. import logs

        denied = self._restricted("logging", request)
        if denied:
            return denied
        if request.method == "GET":
            return json_response(logs.current_settings())
        if request.method != "POST":
            return method_not_allowed()
        body = await self.read_body(request)
        document = http_codec.loads(body) if body else {}
        if not isinstance(document, dict):
            raise InternalError("attempt to access JSON non-object as object")
        return json_response(logs.update_settings(document, http=True))

    # -- health and metadata ---------------------------------------------
    def server_health(self, request, kind: str) -> Response:
        denied = self._restricted("health", request)
        if denied:
            return denied
        if request.method != "GET":
            return method_not_allowed()
        ok = self.dataplane.server_live() if kind == "live" else self.dataplane.server_ready()
        return Response(200 if ok else 400, content_type=None)

    def model_ready(self, request, model: str, version: str) -> Response:
        denied = self._restricted("health", request)
        if denied:
            return denied
        if request.method != "GET":
            return method_not_allowed()
        if not self.dataplane.model_ready(model, version):
            return error_response(400, "Model version not ready")
        return Response(200, content_type=None)

    def server_metadata(self, request) -> Response:
        denied = self._restricted("metadata", request)
        if denied:
            return denied
        if request.method != "GET":
            return method_not_allowed()
        return json_response(http_views.server_metadata(*self.dataplane.server_metadata()))

    def model_metadata(self, request, model: str, version: str) -> Response:
        denied = self._restricted("metadata", request)
        if denied:
            return denied
        if request.method != "GET":
            return method_not_allowed()
        return json_response(http_views.model_metadata(self.dataplane.model_metadata(model, version)))

    async def model_config(self, request, model: str, version: str) -> Response:
        denied = self._restricted("model-config", request)
        if denied:
            return denied
        if request.method != "GET":
            return method_not_allowed()
        document = http_views.model_config(self.dataplane.model_config(model, version))
        return Response(200, [orjson.dumps(document) if document is not None else b""])

    async def model_stats(self, request, model: str, version: str) -> Response:
        denied = self._restricted("statistics", request)
        if denied:
            return denied
        if request.method != "GET":
            return method_not_allowed()
        rows = self.dataplane.model_statistics(model, version)
        return json_response(http_views.model_statistics(rows))

    # -- model repository ------------------------------------------------
    async def repository_index(self, request, repository: str) -> Response:
        denied = self._restricted("model-repository", request)
        if denied:
            return denied
        if request.method != "POST":
            return method_not_allowed()
        body = await self.read_body(request)
        ready = False
        if body:
            document = http_codec.loads(body)
            if isinstance(document, dict) and "ready" in document:
                if type(document["ready"]) is not bool:
                    raise InvalidArgument("Invalid value for 'ready': expected a boolean")
                ready = document["ready"]
        rows = await self._blocking(self.dataplane.repository_index, ready)
        return json_response(http_views.repository_index(rows))

    async def repository_control(self, request, repository: str, model: str,
                                 action: str) -> Response:
        denied = self._restricted("model-repository", request)
        if denied:
            return denied
        if request.method != "POST":
            return method_not_allowed()
        if repository:
            raise Unsupported("'repository_name' specification is not supported")
        body = await self.read_body(request)
        params = {}
        if body:
            document = http_codec.loads(body)
            params = document.get("parameters", {}) if isinstance(document, dict) else {}
            if not isinstance(params, dict):
                raise InternalError("attempt to access JSON non-object as object")
        if action == "load":
            await self._blocking(self.dataplane.load_model, model, _load_parameters(params))
        else:
            unload_dependents = params.get("unload_dependents", False)
            if type(unload_dependents) is not bool:
                raise InternalError("Unable to parse 'unload_dependents': attempt to access "
                                    "JSON non-boolean as boolean")
            await self._blocking(self.dataplane.unload_model, model,
                                 {"unload_dependents": unload_dependents})
        return Response(200, content_type=JSON)

    async def _blocking(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- inference -------------------------------------------------------
    async def infer(self, request, model: str, version: str) -> Response:
        denied = self._restricted("inference", request)
        if denied:
            return denied
        if request.method != "POST":
            return method_not_allowed()
        if self.dataplane.repository.get(model, version).decoupled:
            raise Unsupported("HTTP end point doesn't support models with decoupled "
                              "transaction policy")
        headers = request.headers
        body = await self.read_body(request)
        body = self._decompress(headers.get("content-encoding"), body)
        header_length = _header_length(headers.get(INFER_HEADER_LENGTH), len(body))
        if header_length == 0:  # Triton's raw binary request: the body is the one input
            infer_request, plan = http_codec.decode_raw_request(
                model, version, body, self.dataplane.model_config(model, version))
        else:
            infer_request, plan = http_codec.decode_request(model, version, body,
                                                            header_length, self.max_input_size)
        if self.forward_headers:  # --http-header-forward-pattern
            infer_request.parameters.update(self.forward_headers.parameters(headers.items()))
        result = await self._infer_while_connected(request, infer_request)
        header, buffers = http_codec.encode_response(result, plan)
        extra = []
        if buffers:
            extra.append((b"inference-header-content-length", str(len(header)).encode()))
            content_type = OCTET_STREAM
        else:
            content_type = JSON
        parts = [header, *buffers]
        encoding = accepted_encoding(headers.get("accept-encoding"))
        if encoding is not None:
            parts = [compress(encoding, b"".join(bytes(memoryview(p).cast("B")) if not
                                                  isinstance(p, bytes) else p for p in parts))]
            extra.append((b"content-encoding", encoding.encode()))
        return Response(200, parts, content_type, extra)

    async def _infer_while_connected(self, request: HttpRequest, infer_request):
        """Await the data plane; a client that disconnects meanwhile cancels the request
        (``infer_async`` turns the cancelled await into ``request.cancel()``)."""
        task = asyncio.current_task()
        watch = asyncio.ensure_future(request.receive())  # answers only when the client goes

        def on_message(done) -> None:
            if not done.cancelled() and done.exception() is None \
                    and done.result().get("type") == "http.disconnect":
                task.cancel()
        watch.add_done_callback(on_message)
        try:
            return await self.dataplane.infer_async(infer_request)
        except asyncio.CancelledError:
            if watch.done() and not watch.cancelled():
                raise ClientGone() from None
            raise
        finally:
            watch.cancel()

    def _decompress(self, encoding: Optional[str], body: bytes) -> bytes:
        if encoding is None or encoding in ("", "identity"):
            return body
        if encoding not in ("gzip", "deflate"):
            error = Unsupported("Unsupported compression type")
            error.http_headers = [(b"accept-encoding", b"gzip, deflate")]
            raise error
        if not body:
            raise InvalidArgument("nothing to be decompressed")
        limit = self.max_input_size
        inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)
        try:
            data = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise InvalidArgument(f"failed to decompress the request body: {exc}") from None
        if len(data) > limit:
            raise InvalidArgument(
                f"Decompressed data size exceeds the maximum allowed value of {limit} bytes. "
                "Use --http-max-input-size to increase the limit.")
        return data

    async def read_body(self, request: HttpRequest) -> bytes:
        """The whole body, refused before it is read when it declares more than the limit."""
        limit = self.max_input_size
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), limit)
        chunks, total = [], 0
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            if chunk:
                total += len(chunk)
                if total > limit:
                    raise _too_large(total, limit)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    async def generate(self, request, model: str, version: str, streaming: bool,
                       send) -> Optional[Response]:
        denied = self._restricted("inference", request)
        if denied:
            return denied
        if request.method != "POST":
            return method_not_allowed()
        await http_generate.generate(self, request, model, version, streaming, send)
        return None


def _too_large(size: int, limit: int) -> InvalidArgument:
    return InvalidArgument(
        f"request JSON size of {size} bytes exceeds the maximum allowed input size of {limit} "
        "bytes. Use --http-max-input-size to increase the limit.")


def _header_length(value: Optional[str], content_length: int) -> int:
    """Triton's GetInferenceHeaderLength: where the JSON header ends (the body when absent)."""
    if value is None:
        return content_length
    text = value.strip()
    try:
        parsed = int(text)
    except ValueError:
        raise InvalidArgument(f"Unable to parse Inference-Header-Content-Length, got: {value}") from None
    if not -2**31 <= parsed <= 2**31 - 1:
        raise InvalidArgument(
            "Unable to parse Inference-Header-Content-Length, value is out of range "
            f"[ {-2**31}, {2**31 - 1} ], got: {value}")
    if parsed < 0 or parsed > content_length:
        raise InvalidArgument(f"inference header size should be in range (0, {content_length}), "
                              f"got: {value}")
    return parsed


def _load_parameters(params: dict) -> dict:
    """Load parameters: ``config`` as text, ``file:<path>`` base64-decoded, as Triton."""
    values = {}
    for key, value in params.items():
        if not isinstance(value, str):
            raise InternalError("attempt to access JSON non-string as string")
        if key == "config":
            values[key] = value
        elif key.startswith("file:"):
            values[key] = _base64(value)
        else:
            raise InternalError("unexpected error on creating Triton parameter")
    return values


def _base64(text: str) -> bytes:
    # Triton's decoder skips what isn't base64; padding is restored here the same way.
    cleaned = re.sub(r"[^A-Za-z0-9+/]", "", text)
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except binascii.Error:
        return base64.b64decode(cleaned[: len(cleaned) // 4 * 4])


def accepted_encoding(header: Optional[str]) -> Optional[str]:
    """The response encoding Triton picks from Accept-Encoding: the highest-weighted of
    gzip/deflate/identity, ties to the first listed; None for identity."""
    if not header:
        return None
    best, weight = "identity", 0.0
    for item in header.split(","):
        name, _, q = item.strip().partition(";q=")
        name = name.strip()
        if not name:
            continue
        try:
            value = float(q) if q else 1.0
        except ValueError:
            continue
        if name in ("gzip", "deflate", "identity") and value > weight:
            best, weight = name, value
    return None if best == "identity" else best


def compress(encoding: str, data: bytes) -> bytes:
    if encoding == "gzip":
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    else:
        compressor = zlib.compressobj(6, zlib.DEFLATED, 15)
    return compressor.compress(data) + compressor.flush()


async def send_response(send, response: Response) -> None:
    parts = [p if isinstance(p, (bytes, bytearray)) else memoryview(p).cast("B")
             for p in response.parts]
    length = sum(len(p) for p in parts)
    headers = [(b"content-length", str(length).encode())]
    if response.content_type is not None:
        headers.append((b"content-type", response.content_type))
    headers.extend(response.headers)
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    if not parts:
        await send({"type": "http.response.body", "body": b""})
        return
    last = len(parts) - 1
    for index, part in enumerate(parts):
        await send({"type": "http.response.body", "body": part, "more_body": index < last})
