"""The one configuration object. CLI flags (Triton's names) map onto it, and
every field can also come from the environment with the ``TGS_`` prefix.

Fields are grouped as Triton groups its flags; the command line's flag table
(``cli.py``) names the field each flag sets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# gRPC's largest message: lengths are int32 on the wire.
GRPC_MAX_MESSAGE_BYTES = 2**31 - 1
# Triton's --http-max-input-size default (64 MiB).
HTTP_MAX_INPUT_SIZE = 64 * 2**20


def parse_backend_config(entries: list[str]) -> dict[str, dict[str, str]]:
    """``["onnxruntime,default-max-batch-size=8", "k=v"]`` -> {backend: {setting: value}};
    settings without a backend name are under ``""`` (they apply to every backend)."""
    parsed: dict[str, dict[str, str]] = {}
    for entry in entries:
        head, _, value = entry.partition("=")
        backend, _, setting = head.rpartition(",")
        parsed.setdefault(backend, {})[setting] = value
    return parsed


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TGS_", extra="ignore")

    # -- server --------------------------------------------------------------
    server_id: str = "triton"
    """``--id``: the name ServerMetadata reports."""
    exit_timeout_secs: float = 30.0
    """How long shutdown waits for in-flight requests."""

    # -- model repository ----------------------------------------------------
    model_repository: Optional[Path] = None
    """Directory laid out as Triton's model repository."""
    strict_model_config: bool = False
    """True disables auto-completion of model configurations from model files."""
    exit_on_error: bool = True
    """Exit at start-up if any model fails to load (Triton's default)."""
    strict_readiness: bool = True
    """ServerReady is true only when every model loaded at start-up is ready."""
    model_control_mode: Literal["none", "poll", "explicit"] = "none"
    load_model: list[str] = Field(default_factory=list)
    repository_poll_secs: float = 15.0
    model_config_name: str = ""
    """``--model-config-name``: read ``configs/<name>.pbtxt`` when a model has one."""
    model_load_thread_count: int = 4
    """Models loaded concurrently at start-up and by the poller."""
    model_load_retry_count: int = 0
    """Extra attempts for a model whose load fails."""
    model_namespacing: bool = False

    # -- gRPC ----------------------------------------------------------------
    allow_grpc: bool = True
    grpc_address: str = "0.0.0.0"
    """Address the gRPC frontend binds (Triton's default: all interfaces)."""
    grpc_port: int = 8001
    reuse_grpc_port: bool = False
    """SO_REUSEPORT on the gRPC port (grpcio turns it on unless told not to)."""
    grpc_header_forward_pattern: str = ""
    """Request headers whose names match (case-insensitively) become request parameters."""
    grpc_infer_thread_count: int = 16
    """Threads serving the control RPCs (model loads, metadata); inference holds no thread."""
    grpc_server: Literal["aio"] = "aio"
    """Serving loop: ``grpc.aio`` is the only one (docs/performance.md has the measurement)."""
    grpc_max_message_bytes: int = GRPC_MAX_MESSAGE_BYTES
    """Largest request and response message, both directions."""
    infer_codec: Literal["auto", "cython", "python"] = "auto"
    """ModelInfer wire codec: the Cython one (auto, when built) or protobuf's."""
    grpc_keepalive_time_ms: int = 7_200_000
    grpc_keepalive_timeout_ms: int = 20_000
    grpc_keepalive_permit_without_calls: bool = False
    grpc_http2_max_pings_without_data: int = 2
    grpc_http2_min_recv_ping_interval_without_data_ms: int = 300_000
    grpc_http2_max_ping_strikes: int = 2
    grpc_max_connection_age_ms: Optional[int] = None
    grpc_max_connection_age_grace_ms: Optional[int] = None

    # -- HTTP ----------------------------------------------------------------
    allow_http: bool = True
    http_address: str = "0.0.0.0"
    """Address the HTTP/REST frontend binds (Triton's default: all interfaces)."""
    http_port: int = 8000
    http_thread_count: int = 8
    """Worker threads for the HTTP frontend's blocking calls (model loads and unloads);
    inference goes through the data plane's own path."""
    http_max_input_size: int = HTTP_MAX_INPUT_SIZE
    """Largest HTTP request body (and decompressed body) in bytes."""
    reuse_http_port: bool = False
    http_header_forward_pattern: str = ""

    # -- shared memory, tracing ----------------------------------------------
    allow_client_shm: bool = False
    """Let clients register system and CUDA shared memory (Triton's default since 2.69: off)."""
    trace_config: list[str] = Field(default_factory=list)
    """``--trace-config`` values, Triton's syntax: ``level=TIMESTAMPS``, ``rate=100``,
    ``triton,file=/tmp/trace.json``, ``mode=opentelemetry``, ``opentelemetry,url=...``."""

    # -- logging -------------------------------------------------------------
    log_verbose: int = 0
    log_info: bool = True
    log_warning: bool = True
    log_error: bool = True
    log_format: Literal["default", "ISO8601", "json"] = "default"
    log_file: str = ""
    """Write the log here instead of stderr."""

    # -- metrics -------------------------------------------------------------
    allow_metrics: bool = True
    allow_gpu_metrics: bool = True
    allow_cpu_metrics: bool = True
    metrics_address: str = ""
    """Empty: the HTTP address, as Triton."""
    metrics_port: int = 8002
    metrics_interval_ms: float = 2000.0
    """How often GPU and CPU figures are sampled."""
    metrics_config: list[str] = Field(default_factory=list)
    """``<setting>=<value>`` entries (``summary_latencies=true``, ``summary_quantiles=...``)."""

    # -- backends and memory -------------------------------------------------
    backend_config: list[str] = Field(default_factory=list)
    """``<backend>,<setting>=<value>`` (or ``<setting>=<value>`` for all backends)."""
    pinned_memory_pool_byte_size: int = 1 << 28
    """Pinned host memory the GPU backends may stage through (Triton's default 256 MiB)."""

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

    # -- flags accepted for compatibility that change nothing here ----------
    ignored_flags: list[str] = Field(default_factory=list)
    """Flags given on the command line that this server accepts but does not act on."""

    def backend_settings(self, backend: str) -> dict[str, str]:
        """The ``--backend-config`` settings for ``backend`` (global ones first)."""
        parsed = parse_backend_config(self.backend_config)
        return {**parsed.get("", {}), **parsed.get(backend, {})}

    def metrics_settings(self) -> dict[str, str]:
        return dict(entry.split("=", 1) for entry in self.metrics_config)
