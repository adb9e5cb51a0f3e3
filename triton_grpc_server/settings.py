"""The one configuration object. CLI flags (Triton's names) map onto it, and
every field can also come from the environment with the ``TGS_`` prefix."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# gRPC's largest message: lengths are int32 on the wire.
GRPC_MAX_MESSAGE_BYTES = 2**31 - 1
# Triton's --http-max-input-size default (64 MiB).
HTTP_MAX_INPUT_SIZE = 64 * 2**20


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TGS_", extra="ignore")

    model_repository: Optional[Path] = None
    """Directory laid out as Triton's model repository."""

    grpc_address: str = "0.0.0.0"
    """Address the gRPC frontend binds (Triton's default: all interfaces)."""
    grpc_port: int = 8001
    grpc_infer_thread_count: int = 16
    """Threads serving the control RPCs (model loads, metadata); inference holds no thread."""
    grpc_server: Literal["aio"] = "aio"
    """Serving loop: ``grpc.aio`` is the only one (docs/performance.md has the measurement)."""
    grpc_max_message_bytes: int = GRPC_MAX_MESSAGE_BYTES
    """Largest request and response message, both directions."""
    infer_codec: Literal["auto", "cython", "python"] = "auto"
    """ModelInfer wire codec: the Cython one (auto, when built) or protobuf's."""

    http_address: str = "0.0.0.0"
    """Address the HTTP/REST frontend binds (Triton's default: all interfaces)."""
    http_port: int = 8000
    http_thread_count: int = 8
    """Worker threads for the HTTP frontend's blocking calls (model loads and unloads);
    inference goes through the data plane's own path."""
    http_max_input_size: int = HTTP_MAX_INPUT_SIZE
    """Largest HTTP request body (and decompressed body) in bytes."""
    metrics_port: int = 8002
    allow_metrics: bool = True
    allow_grpc: bool = True
    allow_http: bool = True

    allow_client_shm: bool = False
    """Let clients register system and CUDA shared memory (Triton's default since 2.69: off)."""

    trace_config: list[str] = Field(default_factory=list)
    """``--trace-config`` values, Triton's syntax: ``level=TIMESTAMPS``, ``rate=100``,
    ``triton,file=/tmp/trace.json``, ``mode=opentelemetry``, ``opentelemetry,url=...``."""

    strict_model_config: bool = False
    """True disables auto-completion of model configurations from model files."""
    exit_on_error: bool = True
    """Exit at start-up if any model fails to load (Triton's default)."""
    strict_readiness: bool = True
    """ServerReady is true only when every model loaded at start-up is ready."""
    log_verbose: int = 0
    log_info: bool = True

    model_control_mode: Literal["none", "poll", "explicit"] = "none"
    load_model: list[str] = Field(default_factory=list)
    repository_poll_secs: float = 15.0

    exit_timeout_secs: float = 30.0
    """How long shutdown waits for in-flight requests."""

    # -- security and limits (docs/security.md) ---------------------------------------
    grpc_use_ssl: bool = False
    """Serve gRPC over TLS with --grpc-server-cert / --grpc-server-key."""
    grpc_use_ssl_mutual: bool = False
    """TLS that also requires a client certificate signed by --grpc-root-cert (implies TLS)."""
    grpc_server_cert: Optional[str] = None
    grpc_server_key: Optional[str] = None
    grpc_root_cert: Optional[str] = None
    grpc_restricted_protocol: list[str] = Field(default_factory=list)
    """``<groups>:<key>=<value>`` values: calls of those groups need metadata
    ``triton-grpc-protocol-<key>: <value>`` (restrictions.py)."""
    http_restricted_api: list[str] = Field(default_factory=list)
    """``<groups>:<key>=<value>`` values: HTTP requests of those groups need header ``<key>``."""
    model_load_max_file_bytes: int = 1 << 30
    """Bytes of all ``file:`` parameters one RepositoryModelLoad may carry."""
    model_max_instance_count: int = 64
    """Instances one model may ask for in its instance_group (all groups and devices)."""
