"""The HTTP/REST frontend: :class:`TritonHttpApp` served by uvicorn on the running loop.

uvicorn with httptools was measured against granian's embedded server on the
same ASGI app (``benchmarks/http_bench.py``, docs/performance.md) and kept.
``start`` binds before it returns, so a port in use fails start-up at once.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from concurrent import futures

from .http_app import TritonHttpApp

log = logging.getLogger(__name__)


class HttpFrontend:
    def __init__(self, server, task, executor, address: str):
        self._server = server
        self._task = task
        self._executor = executor
        self.address = address

    async def stop(self, grace: float) -> None:
        """Stop accepting, let in-flight requests finish for up to ``grace`` seconds."""
        self._server.config.timeout_graceful_shutdown = grace
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=grace)
        except asyncio.TimeoutError:
            self._server.force_exit = True
            await self._task
        self._executor.shutdown(wait=False)


def bind_socket(address: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose
    # proto says TCP, and with Nagle on, the body written after the headers waits for the
    # client's delayed ACK (~40 ms per response).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # --reuse-http-port: several servers share the port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"failed to bind HTTP frontend on {address}:{port}: "
                                 f"{exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class _Bound:
    """The HTTP port bound before the models load (``serve()`` starts uvicorn on it)."""

    def __init__(self, dataplane, settings, sock):
        self.dataplane, self.settings, self.sock = dataplane, settings, sock

    async def serve(self) -> None:
        self.running = await start(self.dataplane, self.settings, sock=self.sock)

    async def stop(self, grace: float) -> None:
        if getattr(self, "running", None) is not None:
            await self.running.stop(grace)
        else:
            self.sock.close()


async def bind(dataplane, settings) -> _Bound:
    try:
        sock = bind_socket(settings.http_address, settings.http_port,
                           getattr(settings, "reuse_http_port", False))
    except OSError as exc:  # bind_socket's text already names the address
        raise OSError(exc.strerror or str(exc)) from None
    return _Bound(dataplane, settings, sock)


async def start(dataplane, settings, sock=None) -> HttpFrontend:
    import uvicorn

    restrictions = _restrictions(settings)
    if sock is None:
        sock = bind_socket(settings.http_address, settings.http_port,
                           getattr(settings, "reuse_http_port", False))
    executor = futures.ThreadPoolExecutor(max_workers=settings.http_thread_count,
                                          thread_name_prefix="http")
    app = TritonHttpApp(dataplane, settings, executor, restrictions=restrictions)
    # log_config=None: the server's logging setup stays as server.py made it.
    config = uvicorn.Config(app, http="httptools", loop="none", lifespan="off",
                            access_log=False, log_config=None, server_header=False,
                            date_header=False, timeout_keep_alive=75)
    server = uvicorn.Server(config)
    config.load()
    server.lifespan = config.lifespan_class(config)
    started = asyncio.Event()

    async def serve():
        try:
            await server.startup(sockets=[sock])
            started.set()
            if server.should_exit:
                return
            await server.main_loop()
        finally:
            started.set()
            await server.shutdown(sockets=[sock])

    task = asyncio.get_running_loop().create_task(serve())
    await started.wait()
    if task.done():
        task.result()  # start-up failed: raise it here
    address = f"{settings.http_address}:{settings.http_port}"
    log.info("Started HTTPService at %s", address)
    return HttpFrontend(server, task, executor, address)


def _restrictions(settings):
    """The ``--http-restricted-api`` rules, parsed by the transport-free ``restrictions``
    module that gRPC shares; None when there are none."""
    rules = getattr(settings, "http_restricted_api", None)
    if not rules:
        return None
    from ..restrictions import Restrictions

    return Restrictions.for_http(rules) or None
