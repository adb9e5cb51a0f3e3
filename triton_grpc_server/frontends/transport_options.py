"""What the command line asks of the transports, in each library's terms.

* :func:`grpc_server_options`: Triton's keepalive, ping and connection-age flags
  as grpcio channel arguments (the same core arguments Triton's C++ server sets),
  message limits, and ``SO_REUSEPORT`` only with ``--reuse-grpc-port`` (grpcio
  turns it on by default; Triton leaves it off).
* :class:`HeaderForwarder`: ``--grpc-header-forward-pattern`` /
  ``--http-header-forward-pattern``: request headers whose names match the
  pattern (case-insensitively, anywhere in the name, as RE2's PartialMatch)
  become string request parameters, with Triton's refusal of reserved names.
"""
from __future__ import annotations

import re
from typing import Iterable, Optional

from ..errors import InvalidArgument

# Parameter names the server itself reads; a header may not set them (Triton's list).
RESERVED_PARAMETERS = frozenset({"sequence_id", "sequence_start", "sequence_end", "priority",
                                 "timeout", "headers", "binary_data_output"})


def grpc_server_options(settings) -> list[tuple[str, int]]:
    limit = settings.grpc_max_message_bytes
    options = [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        ("grpc.so_reuseport", int(bool(getattr(settings, "reuse_grpc_port", False)))),
        ("grpc.keepalive_time_ms", getattr(settings, "grpc_keepalive_time_ms", 7_200_000)),
        ("grpc.keepalive_timeout_ms", getattr(settings, "grpc_keepalive_timeout_ms", 20_000)),
        ("grpc.keepalive_permit_without_calls",
         int(bool(getattr(settings, "grpc_keepalive_permit_without_calls", False)))),
        ("grpc.http2.max_pings_without_data",
         getattr(settings, "grpc_http2_max_pings_without_data", 2)),
        ("grpc.http2.min_ping_interval_without_data_ms",
         getattr(settings, "grpc_http2_min_recv_ping_interval_without_data_ms", 300_000)),
        ("grpc.http2.max_ping_strikes", getattr(settings, "grpc_http2_max_ping_strikes", 2)),
    ]
    # Triton sets the connection-age arguments only when the flags are given.
    for flag, argument in (("grpc_max_connection_age_ms", "grpc.max_connection_age_ms"),
                           ("grpc_max_connection_age_grace_ms",
                            "grpc.max_connection_age_grace_ms")):
        value = getattr(settings, flag, None)
        if value is not None:
            options.append((argument, value))
    return options


class HeaderForwarder:
    """Turns matching request headers into request parameters."""

    def __init__(self, pattern: str):
        self.regex = re.compile(pattern, re.IGNORECASE) if pattern else None

    @classmethod
    def for_grpc(cls, settings) -> "HeaderForwarder":
        return cls(getattr(settings, "grpc_header_forward_pattern", "") or "")

    @classmethod
    def for_http(cls, settings) -> "HeaderForwarder":
        return cls(getattr(settings, "http_header_forward_pattern", "") or "")

    def __bool__(self) -> bool:
        return self.regex is not None

    def parameters(self, headers: Optional[Iterable[tuple[str, str]]]) -> dict[str, str]:
        """``{header: value}`` for the matching ``(name, value)`` pairs; INVALID_ARG for a
        reserved name, with Triton's text."""
        found: dict[str, str] = {}
        if self.regex is None or not headers:
            return found
        for key, value in headers:
            if not self.regex.search(key):
                continue
            if key in RESERVED_PARAMETERS or key.startswith("triton_"):
                raise InvalidArgument(
                    f"Header '{key}' is reserved for Triton usage and cannot be forwarded.")
            found[key] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        return found
