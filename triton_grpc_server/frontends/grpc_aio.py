"""The gRPC frontend on ``grpc.aio`` (``--grpc-server aio``).

Same servicer, handler table and error mapping as ``frontends/grpc.py``; only the
wrapping differs: each handler is a coroutine. The servicer's methods stay plain
functions, so where the blocking work runs is decided here, in one place:

* every RPC runs in a thread pool through ``run_in_executor`` (model loads
  take seconds; the scheduler blocks its caller until the model has run, and
  a dynamic batcher waits for more requests meanwhile), which on the loop
  would stall every connection and keep batches at one request;
* ModelInfer requests up to ``grpc_aio_inline_bytes`` (a setting, default 0)
  run inline instead, which saves the thread hop for fast unbatched models
  (docs/performance.md has the measurement).

The loop lives in its own thread; :class:`AioServer` gives ``server.py`` the
same ``add_insecure_port``/``start``/``stop(grace)`` surface as ``grpc.Server``.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent import futures
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .codecs import load_codec
from .grpc import GRPCInferenceServicer, build_handlers, error_status, server_options
from .grpc_security import aio_interceptors

log = logging.getLogger(__name__)


class _PoolContext:
    """The RPC context as a servicer method running in the pool sees it.

    grpc.aio cancels the handler's task when the client cancels or the deadline
    passes, but the context's ``cancelled()`` stays false and ``time_remaining()``
    stops at 0; ``is_active()`` here turns false then, so the scheduler's
    cancellation check (``frontends/grpc.py`` ``_cancelled``) sees it.
    """

    __slots__ = ("_context", "gone")

    def __init__(self, context):
        self._context = context
        self.gone = False

    def is_active(self) -> bool:
        return not (self.gone or self._context.cancelled())

    def __getattr__(self, name):
        return getattr(self._context, name)


def _guard(executor: futures.Executor, inline_max_bytes: int = 0) -> Callable:
    """Wraps a servicer method as a coroutine handler that runs it on ``executor``.

    Requests of ``len`` up to ``inline_max_bytes`` (ModelInfer's raw bytes) run on
    the loop instead. Every error becomes a gRPC status.
    """
    def guard(method: Callable) -> Callable:
        async def handler(request, context):
            try:
                if inline_max_bytes > 0 and len(request) <= inline_max_bytes:
                    return method(request, context)
                call = _PoolContext(context)
                try:
                    return await asyncio.get_running_loop().run_in_executor(
                        executor, method, request, call)
                except asyncio.CancelledError:  # client gone or deadline passed
                    call.gone = True
                    raise
            except Exception as exc:
                code, message = error_status(exc, method.__name__)
            await context.abort(code, message)
        handler.__name__ = method.__name__
        return handler
    return guard


class ReadinessHealthServicer(health.aio.HealthServicer):
    """``grpc.health.v1.Health/Check``: SERVING iff the server is ready, as Triton."""

    def __init__(self, dataplane):
        super().__init__()
        self.dataplane = dataplane

    async def Check(self, request, context):
        status = (health_pb2.HealthCheckResponse.SERVING if self.dataplane.server_ready()
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        return health_pb2.HealthCheckResponse(status=status)


class AioServer:
    """A ``grpc.aio`` server on an event loop in its own thread, driven like ``grpc.Server``."""

    def __init__(self, dataplane, settings):
        inline_max_bytes = settings.grpc_aio_inline_bytes
        self._executor = futures.ThreadPoolExecutor(
            max_workers=settings.grpc_infer_thread_count, thread_name_prefix="grpc-aio-pool")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="grpc-aio", daemon=True)
        self._thread.start()
        codec = load_codec(settings.infer_codec)
        log.info("ModelInfer codec: %s; grpc.aio, inline up to %d bytes",
                 codec.__name__, inline_max_bytes)
        servicer = GRPCInferenceServicer(dataplane, codec)
        handlers = build_handlers(servicer, _guard(self._executor),
                                  _guard(self._executor, inline_max_bytes))

        async def create() -> grpc.aio.Server:  # the server belongs to the loop it is made on
            server = grpc.aio.server(options=server_options(settings),
                                     interceptors=aio_interceptors(settings))
            server.add_generic_rpc_handlers((handlers,))
            health_pb2_grpc.add_HealthServicer_to_server(ReadinessHealthServicer(dataplane), server)
            return server

        self._server = self._wait(create())

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def _wait(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _bind(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_insecure_port(self, address: str) -> int:
        return self._wait(self._bind(address))

    async def _bind_secure(self, address: str, credentials) -> int:
        return self._server.add_secure_port(address, credentials)

    def add_secure_port(self, address: str, credentials) -> int:
        return self._wait(self._bind_secure(address, credentials))

    def start(self) -> None:
        self._wait(self._server.start())

    def stop(self, grace: float | None) -> threading.Event:
        """Refuse new RPCs, let in-flight ones finish for up to ``grace`` s, then stop the loop."""
        stopped = threading.Event()

        def stop_all() -> None:
            self._wait(self._server.stop(grace))
            self._executor.shutdown(wait=True)  # a ModelInfer cut off by the grace still finishes
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            stopped.set()

        threading.Thread(target=stop_all, name="grpc-aio-stop", daemon=True).start()
        return stopped


def create_grpc_server(dataplane, settings) -> AioServer:
    return AioServer(dataplane, settings)
