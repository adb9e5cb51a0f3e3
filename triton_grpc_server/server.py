"""Load the repository, run every enabled frontend on one asyncio loop, stop cleanly.

Frontends are modules with ``async def start(dataplane, settings)`` returning
an object with ``async stop(grace)``; :data:`FRONTENDS` lists them with the
setting that enables each. A frontend module may also expose ``async def
bind(dataplane, settings)``, returning the same object bound but not yet
serving, with ``async serve()``: every such port is bound before any model
loads, so a port in use ends start-up at once, and serving starts once the
models are loaded. SIGINT/SIGTERM stop them: new requests are refused,
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
    # First: a worker under a supervisor copies its peers' models before it serves.
    ("worker coordination", "worker_peers", "triton_grpc_server.workers.coordination"),
    ("gRPC", "allow_grpc", "triton_grpc_server.frontends.grpc"),
    ("HTTP", "allow_http", "triton_grpc_server.frontends.http"),
]


def configure_logging(settings: Settings) -> None:
    from . import logs

    logs.configure(settings)


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
    from .heap import start_idle_trimmer

    start_idle_trimmer(stopping)

    from .dataplane import DataPlane
    from .metrics import create_metrics_server, metrics_address
    from .repository import ModelRepository
    from .repository.control import ModelControl

    repository = ModelRepository(settings.model_repository,
                                 auto_complete=not settings.strict_model_config,
                                 settings=settings)
    # Every port is bound before any model loads: a port in use ends start-up at once,
    # naming it, instead of after minutes of loading.
    try:
        metrics = create_metrics_server(repository, settings)  # bound, not serving; None if off
    except OSError as exc:
        print(f"error: failed to start Metrics service on {metrics_address(settings)}:"
              f"{settings.metrics_port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    control = ModelControl(repository, settings)
    dataplane = DataPlane(repository, settings, control=control)
    try:
        code = asyncio.run(serve(dataplane, settings, stopping, repository, control, metrics))
    finally:
        if metrics is not None:
            metrics.stop()
        control.stop()
        dataplane.close()
        repository.close()
    log.info("stopped")
    return code


def load_models(repository, control, settings: Settings) -> bool:
    """Start-up loading: False when a model failed and ``--exit-on-error`` says stop."""
    from .logs import log_model_table

    if not repository.scan():
        log.warning("model repository '%s' is empty: no model will be served",
                    settings.model_repository)
    control.load_startup_models()
    log_model_table(repository, log)
    failed = [(n, e.reason) for n, e in repository.entries().items() if e.state != "READY"]
    if failed and settings.exit_on_error:
        for name, reason in failed:
            print(f"error: failed to load '{name}': {reason}", file=sys.stderr)
        print("error: creating server: Internal - failed to load all models", file=sys.stderr)
        return False
    return True


async def serve(dataplane, settings: Settings, stopping: threading.Event, repository, control,
                metrics) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if stopping.is_set():  # a signal arrived during start-up
        stop.set()

    bound, running, drained = [], [], []
    try:
        # 1. bind every enabled frontend (a module with bind() serves only once told to)
        for name, flag, module_name in FRONTENDS:
            if not getattr(settings, flag, False):
                continue
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                print(f"error: the {name} frontend is not available: {exc}", file=sys.stderr)
                return 1
            try:
                if hasattr(module, "bind"):
                    bound.append(await module.bind(dataplane, settings))
                else:
                    bound.append(module)
            except Exception as exc:  # a bind failure, most often
                print(f"error: {exc}", file=sys.stderr)
                return 1
        # 2. load the models (off the loop: signals still arrive)
        if not await loop.run_in_executor(None, load_models, repository, control, settings):
            return 1
        # 3. serve
        for frontend in bound:
            try:
                if hasattr(frontend, "serve"):
                    await frontend.serve()
                    running.append(frontend)
                else:  # a frontend module with start() only: binds and serves now
                    running.append(await frontend.start(dataplane, settings))
            except Exception as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        if metrics is not None:
            metrics.start()
        control.start()  # the repository poller, in poll mode

        await stop.wait()
        dataplane.accepting = False
        # The frontends refuse new requests first (as Triton stops its endpoints before
        # the core), so nothing is accepted that the drain could lose.
        stopping = [asyncio.ensure_future(frontend.stop(settings.exit_timeout_secs))
                    for frontend in running]
        await asyncio.sleep(0)  # each stop() has run up to its first wait: listeners closed
        log.info("Waiting for in-flight requests to complete (up to %.0fs).",
                 settings.exit_timeout_secs)
        await asyncio.gather(*stopping, return_exceptions=True)
        drained = list(running)
    finally:
        frontends = running + [f for f in bound if f not in running and hasattr(f, "stop")]
        frontends = [f for f in frontends if f not in drained]
        await asyncio.gather(*(frontend.stop(settings.exit_timeout_secs)
                               for frontend in frontends), return_exceptions=True)
    return 0
