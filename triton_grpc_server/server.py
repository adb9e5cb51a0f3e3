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


def check_frontend_settings(settings: Settings) -> str:
    """A one-line reason the endpoint settings can't be served, or '' when they can."""
    import importlib.util

    from .restrictions import RestrictionError, Restrictions

    try:
        Restrictions.for_grpc(settings.grpc_restricted_protocol)
        Restrictions.for_http(settings.http_restricted_api)
    except RestrictionError as exc:
        return str(exc).strip()
    # An explicit --allow-http true must not be silently ignored: refuse it until
    # an HTTP frontend is installed (the default stays false, so launch lines
    # without the flag keep working).
    if settings.allow_http and importlib.util.find_spec(
            "triton_grpc_server.frontends.http") is None:
        return ("--allow-http true: this build has no HTTP/REST frontend; use the gRPC "
                "endpoint or pass --allow-http false")
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

    problem = check_frontend_settings(settings)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1

    from .dataplane import DataPlane
    from .frontends.grpc_security import SecurityConfigError, add_port
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
    server = None
    if settings.allow_grpc:  # --allow-grpc false: no gRPC endpoint at all, as Triton
        server = create_grpc_server(dataplane, settings)
        address = f"{settings.grpc_address}:{settings.grpc_port}"
        try:
            bound = add_port(server, address, settings)
        except SecurityConfigError as exc:
            bound, reason = 0, str(exc)
        except RuntimeError as exc:
            bound, reason = 0, str(exc)
        else:
            reason = "address in use or not available"
        if not bound:
            print(f"error: failed to bind gRPC frontend on {address}: {reason}", file=sys.stderr)
            repository.close()
            return 1
        server.start()
        log.info("Started GRPCInferenceService at %s%s", address,
                 " (TLS)" if settings.grpc_use_ssl or settings.grpc_use_ssl_mutual else "")
    metrics = create_metrics_server(repository, settings)  # None when disabled or not installed
    control.start()  # the repository poller, in poll mode

    stopping.wait()
    log.info("stopping: waiting up to %.0fs for in-flight requests", settings.exit_timeout_secs)
    dataplane.accepting = False
    if server is not None:
        server.stop(grace=settings.exit_timeout_secs).wait()
    if metrics is not None:
        metrics.stop()
    control.stop()
    repository.close()
    log.info("stopped")
    return 0
