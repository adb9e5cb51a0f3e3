"""Start the frontends, load the repository, stop cleanly on SIGINT/SIGTERM."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from .settings import Settings

log = logging.getLogger("triton_grpc_server")


def configure_logging(settings: Settings) -> None:
    level = logging.DEBUG if settings.log_verbose > 0 else (
        logging.INFO if settings.log_info else logging.WARNING)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(levelname).1s%(asctime)s %(name)s] %(message)s")


def check_repository(settings: Settings) -> str:
    """A one-line reason the repository can't be used, or '' when it can."""
    path = settings.model_repository
    if path is None:
        return "--model-repository must be specified"
    if not path.exists():
        return f"model repository '{path}' does not exist"
    if not path.is_dir():
        return f"model repository '{path}' is not a directory"
    if not os.access(path, os.R_OK | os.X_OK):
        return f"model repository '{path}' is not readable"
    return ""


def load_startup_models(repository, settings: Settings):
    """Load what the control mode loads at start-up; returns the :class:`ModelControl`."""
    from .repository.control import ModelControl

    control = ModelControl(repository, settings)
    control.load_startup_models()
    return control


def run(settings: Settings) -> int:
    configure_logging(settings)
    # Installed first: a signal during start-up then stops the server once it is up,
    # instead of killing it half-started.
    stopping = threading.Event()

    def on_signal(signum, frame):
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    problem = check_repository(settings)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1

    from .dataplane import DataPlane
    if settings.grpc_server == "aio":
        from .frontends.grpc_aio import create_grpc_server
    else:
        from .frontends.grpc import create_grpc_server
    from .metrics import create_metrics_server
    from .repository import ModelRepository

    repository = ModelRepository(settings.model_repository,
                                 auto_complete=not settings.strict_model_config,
                                 settings=settings)
    control = load_startup_models(repository, settings)
    failed = [(n, e.reason) for n, e in repository.entries().items() if e.state != "READY"]
    if failed and settings.exit_on_error:
        for name, reason in failed:
            print(f"error: failed to load '{name}': {reason}", file=sys.stderr)
        print("error: creating server: Internal - failed to load all models", file=sys.stderr)
        repository.close()
        return 1

    dataplane = DataPlane(repository, settings, control=control)
    server = create_grpc_server(dataplane, settings)
    address = f"{settings.grpc_address}:{settings.grpc_port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        bound, reason = 0, str(exc)
    else:
        reason = "address in use or not available"
    if not bound:
        print(f"error: failed to bind gRPC frontend on {address}: {reason}", file=sys.stderr)
        repository.close()
        return 1
    server.start()
    log.info("Started GRPCInferenceService at %s", address)
    http = None
    if settings.allow_http:
        try:
            http = _ThreadedFrontend("triton_grpc_server.frontends.http", dataplane, settings)
        except Exception as exc:
            print(f"error: failed to start HTTP service on "
                  f"{settings.http_address}:{settings.http_port}: {exc}", file=sys.stderr)
            server.stop(grace=0).wait()
            repository.close()
            return 1
    metrics = create_metrics_server(repository, settings)  # None when disabled or not installed
    control.start()  # the repository poller, in poll mode

    stopping.wait()
    log.info("stopping: waiting up to %.0fs for in-flight requests", settings.exit_timeout_secs)
    dataplane.accepting = False
    if http is not None:
        http.stop(settings.exit_timeout_secs)
    server.stop(grace=settings.exit_timeout_secs).wait()
    if metrics is not None:
        metrics.stop()
    control.stop()
    repository.close()
    log.info("stopped")
    return 0


class _ThreadedFrontend:
    """An event-loop frontend (``start(dataplane, settings)``) on its own loop in a thread.

    Temporary: once this module runs one asyncio loop for every frontend, the
    frontend is started on that loop from the list of enabled frontends instead.
    """

    def __init__(self, module: str, dataplane, settings):
        import asyncio
        import importlib

        try:  # uvloop when installed: its transports are far cheaper than asyncio's
            import uvloop

            self._loop = uvloop.new_event_loop()
        except ImportError:
            self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="http-loop",
                                        daemon=True)
        self._thread.start()
        start = importlib.import_module(module).start
        try:
            self._frontend = asyncio.run_coroutine_threadsafe(
                start(dataplane, settings), self._loop).result()
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            raise

    def stop(self, grace: float) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self._frontend.stop(grace), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
