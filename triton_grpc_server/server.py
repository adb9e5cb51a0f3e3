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
    from .metrics import create_metrics_server, metrics_address
    from .repository import ModelRepository

    repository = ModelRepository(settings.model_repository,
                                 auto_complete=not settings.strict_model_config,
                                 settings=settings)
    # Every port is bound before any model loads: a port in use ends start-up at once,
    # naming it, instead of after minutes of loading.
    try:
        metrics = create_metrics_server(repository, settings)  # None when disabled
    except OSError as exc:
        print(f"error: failed to start Metrics service on "
              f"{metrics_address(settings)}:{settings.metrics_port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    from .repository.control import ModelControl

    control = ModelControl(repository, settings)
    dataplane = DataPlane(repository, settings, control=control)
    server = create_grpc_server(dataplane, settings)
    address = f"{settings.grpc_address}:{settings.grpc_port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        print(f"error: failed to bind gRPC frontend on {address}: address in use or not "
              "available", file=sys.stderr)
        if metrics is not None:
            metrics.stop()
        return 1

    if not repository.scan():
        log.warning("model repository '%s' is empty: no model will be served",
                    settings.model_repository)
    control.load_startup_models()
    from .logs import log_model_table

    log_model_table(repository, log)
    failed = [(n, e.reason) for n, e in repository.entries().items() if e.state != "READY"]
    if failed and settings.exit_on_error:
        for name, reason in failed:
            print(f"error: failed to load '{name}': {reason}", file=sys.stderr)
        print("error: creating server: Internal - failed to load all models", file=sys.stderr)
        server.stop(grace=0)
        if metrics is not None:
            metrics.stop()
        repository.close()
        return 1

    server.start()
    log.info("Started GRPCInferenceService at %s", address)
    if metrics is not None:
        metrics.start()
    control.start()  # the repository poller, in poll mode

    stopping.wait()
    log.info("stopping: waiting up to %.0fs for in-flight requests", settings.exit_timeout_secs)
    dataplane.accepting = False
    server.stop(grace=settings.exit_timeout_secs).wait()
    if metrics is not None:
        metrics.stop()
    control.stop()
    repository.close()
    log.info("stopped")
    return 0
