"""Load the repository, run every enabled frontend on one asyncio loop, stop cleanly.

Frontends are modules with ``async def start(dataplane, settings)`` returning
an object with ``async stop(grace)``; :data:`FRONTENDS` lists them with the
setting that enables each. SIGINT/SIGTERM stop them: new requests are refused,
in-flight ones get up to ``--exit-timeout-secs`` to finish.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
import threading

from .settings import Settings

log = logging.getLogger("triton_grpc_server")

# (name in messages, Settings flag that enables it, module)
FRONTENDS = [
    ("gRPC", "allow_grpc", "triton_grpc_server.frontends.grpc"),
    ("HTTP", "allow_http", "triton_grpc_server.frontends.http"),
]


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
    try:
        code = asyncio.run(serve(dataplane, settings, stopping, repository, control,
                                 create_metrics_server))
    finally:
        control.stop()
        dataplane.close()
        repository.close()
    log.info("stopped")
    return code


async def serve(dataplane, settings: Settings, stopping: threading.Event, repository, control,
                create_metrics_server) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if stopping.is_set():  # a signal arrived while the models loaded
        stop.set()

    running = []
    try:
        for name, flag, module_name in FRONTENDS:
            if not getattr(settings, flag, False):
                continue
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                print(f"error: the {name} frontend is not available: {exc}", file=sys.stderr)
                return 1
            try:
                running.append(await module.start(dataplane, settings))
            except Exception as exc:  # a bind failure, most often
                print(f"error: {exc}", file=sys.stderr)
                return 1
        metrics = create_metrics_server(repository, settings)  # None when disabled
        control.start()  # the repository poller, in poll mode

        await stop.wait()
        dataplane.accepting = False
        # The frontends refuse new requests first (as Triton stops its endpoints before
        # the core), so nothing is accepted that the drain below could lose.
        stopping = [asyncio.ensure_future(frontend.stop(settings.exit_timeout_secs))
                    for frontend in running]
        running = []
        await asyncio.sleep(0)  # each stop() has run up to its first wait: listeners closed
        log.info("stopping: waiting up to %.0fs for in-flight requests",
                 settings.exit_timeout_secs)
        if metrics is not None:
            # Off the loop: shutting the metrics server down waits for its poll interval,
            # which would stall every in-flight answer meanwhile.
            await loop.run_in_executor(None, metrics.stop)
        await asyncio.gather(*stopping, return_exceptions=True)
    finally:
        await asyncio.gather(*(frontend.stop(settings.exit_timeout_secs)
                               for frontend in running), return_exceptions=True)
    return 0
