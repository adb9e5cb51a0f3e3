"""Restricted APIs: Triton's ``--grpc-restricted-protocol`` and ``--http-restricted-api``.

Each flag value is ``<group>[,<group>...]:<key>=<value>``: calls to the APIs of
those groups must carry a header ``<key>: <value>`` (gRPC: metadata key
``triton-grpc-protocol-<key>``; HTTP: header ``<key>`` as given), else they are
refused. A group may appear in one flag value only. Transport-free: the gRPC
interceptor and the HTTP frontend both ask :meth:`Restrictions.refusal`.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional

# Triton's restricted categories, in its order.
GROUPS = ("health", "metadata", "inference", "shared-memory", "model-config",
          "model-repository", "statistics", "trace", "logging")

# gRPC metadata keys of a restricted protocol carry this prefix before the flag's key.
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"

# Every RPC of inference.GRPCInferenceService (and the standard health check) -> its group.
GRPC_METHOD_GROUPS = {
    "ServerLive": "health", "ServerReady": "health", "ModelReady": "health",
    "ServerMetadata": "metadata", "ModelMetadata": "metadata",
    "ModelInfer": "inference", "ModelStreamInfer": "inference",
    "ModelConfig": "model-config",
    "ModelStatistics": "statistics",
    "RepositoryIndex": "model-repository", "RepositoryModelLoad": "model-repository",
    "RepositoryModelUnload": "model-repository",
    "SystemSharedMemoryStatus": "shared-memory", "SystemSharedMemoryRegister": "shared-memory",
    "SystemSharedMemoryUnregister": "shared-memory", "CudaSharedMemoryStatus": "shared-memory",
    "CudaSharedMemoryRegister": "shared-memory", "CudaSharedMemoryUnregister": "shared-memory",
    "TraceSetting": "trace",
    "LogSettings": "logging",
}
GRPC_SERVICE = "inference.GRPCInferenceService"
GRPC_HEALTH_CHECK = "/grpc.health.v1.Health/Check"


def grpc_method_group(method: str) -> Optional[str]:
    """The group of a full gRPC method name (``/inference.GRPCInferenceService/ModelInfer``)."""
    if method == GRPC_HEALTH_CHECK:
        return "health"
    service, _, name = method.lstrip("/").partition("/")
    if service != GRPC_SERVICE:
        return None
    return GRPC_METHOD_GROUPS.get(name)


def http_route_group(method: str, path: str) -> Optional[str]:
    """The group of a KServe v2 / Triton HTTP route (Triton's ``http_server.cc`` table)."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if not parts or parts[0] != "v2":
        return None
    rest = parts[1:]
    if not rest:
        return "metadata"                      # GET /v2
    head = rest[0]
    if head == "health":
        return "health"                        # /v2/health/live, /v2/health/ready
    if head == "repository":
        return "model-repository"              # index, models/<m>/load|unload
    if head in ("systemsharedmemory", "cudasharedmemory"):
        return "shared-memory"
    if head == "trace":
        return "trace"
    if head == "logging":
        return "logging"
    if head == "models":
        tail = rest[1:]
        if tail == ["stats"]:
            return "statistics"                # /v2/models/stats: every model
        tail = tail[1:]                        # past the model name
        if tail[:1] == ["versions"]:
            tail = tail[2:]
        if not tail:
            return "metadata"                  # /v2/models/<m>[/versions/<v>]
        return _MODEL_ROUTE_GROUPS.get(tail[0])
    return None


_MODEL_ROUTE_GROUPS = {"ready": "health", "config": "model-config", "stats": "statistics",
                       "infer": "inference", "generate": "inference",
                       "generate_stream": "inference", "trace": "trace"}


class RestrictionError(ValueError):
    """A malformed restriction flag value (the CLI reports it and exits, as Triton)."""


class Restrictions:
    """group -> (header name, expected value)."""

    def __init__(self, rules: Optional[Mapping[str, tuple[str, str]]] = None):
        self.rules: dict[str, tuple[str, str]] = dict(rules or {})

    def __bool__(self) -> bool:
        return bool(self.rules)

    @classmethod
    def parse(cls, values: Iterable[str], option: str, header_prefix: str = "",
              feature: str = "api") -> "Restrictions":
        """Parse flag values as Triton does; ``feature`` names them in errors ("protocol", "api")."""
        rules: dict[str, tuple[str, str]] = {}
        for value in values:
            groups, key, expected = _split(value, option)
            for group in (g for g in groups.split(",")):
                if group not in GROUPS:
                    raise RestrictionError(f"unknown restricted {feature} '{group}' ")
                if group in rules:
                    raise RestrictionError(f"restricted {feature} '{group}' can not be specified "
                                           "in multiple config groups")
                # Kept as given for the error text; compared ignoring case (gRPC lower-cases
                # metadata keys, HTTP header names are case-insensitive).
                rules[group] = (header_prefix + key, expected)
        return cls(rules)

    @classmethod
    def for_grpc(cls, values: Iterable[str]) -> "Restrictions":
        return cls.parse(values, "grpc-restricted-protocol", GRPC_HEADER_PREFIX, "protocol")

    @classmethod
    def for_http(cls, values: Iterable[str]) -> "Restrictions":
        return cls.parse(values, "http-restricted-api", "", "api")

    def refusal(self, group: Optional[str], headers: Mapping[str, str]) -> Optional[str]:
        """None when a call of ``group`` with ``headers`` may proceed, else the header it lacks.

        ``headers``: the call's header names (any case) to values.
        """
        rule = self.rules.get(group) if group else None
        if rule is None:
            return None
        header, expected = rule
        wanted = header.lower()
        for name, value in headers.items():
            if name.lower() == wanted and value == expected:
                return None
        return header


def grpc_refusal_text(header: str) -> str:
    """Triton's gRPC status text (UNAVAILABLE) for a call without the header."""
    return f"This protocol is restricted, expecting header '{header}'"


def http_refusal_text(header: str) -> str:
    """Triton's HTTP error text (403 Forbidden) for a request without the header."""
    return f"This API is restricted, expecting header '{header}'"


def _split(value: str, option: str) -> tuple[str, str, str]:
    """``<groups>:<key>=<value>``, with Triton's error for anything else."""
    error = (f"--{option} option format is '<config name>:<setting>=<value>'. Got {value}\n")
    colon = value.find(":")
    if colon < 0:
        raise RestrictionError(error)
    equals = value.find("=", colon + 1)
    if equals < 0:
        raise RestrictionError(error)
    groups, key, expected = value[:colon], value[colon + 1:equals], value[equals + 1:]
    if not groups or not key or not expected:
        raise RestrictionError(error)
    return groups, key, expected
