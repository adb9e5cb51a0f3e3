"""Command line: Triton's flag names onto :class:`Settings`."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ._version import TRITON_COMPAT_VERSION, __version__
from .settings import GRPC_MAX_MESSAGE_BYTES, HTTP_MAX_INPUT_SIZE, Settings


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got '{text}'")


def _trace_config(text: str) -> str:
    from .trace import parse_trace_config

    try:
        parse_trace_config([text])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="triton_grpc_server",
        description="Inference server speaking NVIDIA Triton's gRPC protocol.")
    p.add_argument("--version", action="version",
                   version=f"triton_grpc_server {__version__} (Triton protocol {TRITON_COMPAT_VERSION})")
    p.add_argument("--model-repository", "--model-store", "--repo", dest="model_repository",
                   help="model repository directory (Triton layout)")
    p.add_argument("--grpc-address", "--host", dest="grpc_address", help="address to bind (default 0.0.0.0)")
    p.add_argument("--grpc-port", type=int, help="gRPC port (default 8001)")
    p.add_argument("--grpc-infer-thread-count", type=int,
                   help="threads serving control RPCs such as model loads (default 16)")
    p.add_argument("--grpc-server", choices=["aio"],
                   help="serving loop (grpc.aio, the only one; kept for launch lines that name it)")
    p.add_argument("--grpc-max-message-size", dest="grpc_max_message_bytes", type=int,
                   help=f"largest gRPC message in bytes (default {GRPC_MAX_MESSAGE_BYTES})")
    p.add_argument("--infer-codec", choices=["auto", "cython", "python"],
                   help="ModelInfer wire codec (default auto: Cython when built)")
    p.add_argument("--http-port", type=int, help="HTTP/REST port (default 8000)")
    p.add_argument("--http-address", help="address the HTTP frontend binds (default 0.0.0.0)")
    p.add_argument("--http-thread-count", type=int,
                   help="threads for the HTTP frontend's blocking calls (default 8)")
    p.add_argument("--http-max-input-size", type=int, metavar="BYTES",
                   help=f"largest HTTP request body in bytes (default {HTTP_MAX_INPUT_SIZE})")
    p.add_argument("--metrics-port", type=int, help="Prometheus metrics port (default 8002)")
    p.add_argument("--allow-metrics", type=_bool, metavar="BOOL")
    p.add_argument("--allow-grpc", type=_bool, metavar="BOOL")
    p.add_argument("--allow-http", type=_bool, metavar="BOOL")
    p.add_argument("--allow-client-shm", type=_bool, metavar="BOOL",
                   help="let clients register system/CUDA shared memory (default false)")
    p.add_argument("--trace-config", action="append", type=_trace_config, metavar="[MODE,]SETTING=VALUE",
                   help="trace setting, repeatable: level=OFF|TIMESTAMPS|TENSORS, rate=N, "
                        "count=N, mode=triton|opentelemetry, triton,file=PATH, "
                        "triton,log-frequency=N, opentelemetry,url=URL")
    p.add_argument("--strict-model-config", type=_bool, metavar="BOOL",
                   help="true: do not auto-complete model configurations")
    p.add_argument("--disable-auto-complete-config", dest="strict_model_config",
                   action="store_const", const=True, help="same as --strict-model-config=true")
    p.add_argument("--exit-on-error", type=_bool, metavar="BOOL",
                   help="exit if a model fails to load at start-up (default true)")
    p.add_argument("--strict-readiness", type=_bool, metavar="BOOL")
    p.add_argument("--log-verbose", type=int, metavar="LEVEL")
    p.add_argument("--log-info", type=_bool, metavar="BOOL")
    p.add_argument("--model-control-mode", choices=["none", "poll", "explicit"])
    p.add_argument("--load-model", action="append", metavar="NAME",
                   help="model to load at start-up in explicit mode (repeatable; '*' = all)")
    p.add_argument("--repository-poll-secs", type=float)
    p.add_argument("--exit-timeout-secs", type=float)
    add_security_arguments(p)
    return p


# -- security and limits (docs/security.md) ----------------------------------------------
def add_security_arguments(p: argparse.ArgumentParser) -> None:
    """TLS, restricted APIs and load limits, with Triton's flag names where Triton has them."""
    p.add_argument("--grpc-use-ssl", type=_bool, metavar="BOOL",
                   help="serve gRPC over TLS (needs --grpc-server-cert and --grpc-server-key)")
    p.add_argument("--grpc-use-ssl-mutual", type=_bool, metavar="BOOL",
                   help="TLS requiring a client certificate signed by --grpc-root-cert; "
                        "preempts --grpc-use-ssl")
    p.add_argument("--grpc-server-cert", metavar="PEM", help="server certificate file")
    p.add_argument("--grpc-server-key", metavar="PEM", help="server private key file")
    p.add_argument("--grpc-root-cert", metavar="PEM",
                   help="root certificate that client certificates must chain to")
    p.add_argument("--grpc-restricted-protocol", action="append", metavar="<groups>:<key>=<value>",
                   help="calls of these groups need metadata 'triton-grpc-protocol-<key>: "
                        "<value>' (repeatable; groups: health, metadata, inference, "
                        "shared-memory, model-config, model-repository, statistics, trace, "
                        "logging)")
    p.add_argument("--http-restricted-api", action="append", metavar="<groups>:<key>=<value>",
                   help="HTTP requests of these groups need header '<key>: <value>' (repeatable)")
    p.add_argument("--model-load-max-file-bytes", type=int, metavar="BYTES",
                   help="bytes of file: parameters one model load may carry (default 1 GiB)")
    p.add_argument("--model-max-instance-count", type=int, metavar="N",
                   help="instances one model's instance_group may ask for (default 64)")


def check_security_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Malformed restriction values stop the launch, as Triton's parser does."""
    from .restrictions import RestrictionError, Restrictions

    try:
        Restrictions.for_grpc(args.grpc_restricted_protocol or [])
        Restrictions.for_http(args.http_restricted_api or [])
    except RestrictionError as exc:
        p.error(str(exc).strip())


def parse_settings(argv: Optional[Sequence[str]] = None) -> Settings:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_security_arguments(parser, args)
    given = {k: v for k, v in vars(args).items() if v is not None}
    return Settings(**given)


def main(argv: Optional[Sequence[str]] = None) -> int:
    settings = parse_settings(argv)
    from .server import run

    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
