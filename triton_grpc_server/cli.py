"""Command line: every flag of ``tritonserver`` onto :class:`Settings`.

The flags are one table (:data:`FLAGS`), in Triton's groups and with Triton's
value syntax: booleans as Triton reads them (``true``/``on``/``1``,
``false``/``off``/``0``, any case), ``--log-verbose`` as an integer or a
boolean, ``<backend>,<setting>=<value>`` pairs. A flag either sets a
:class:`Settings` field, or is accepted, checked, and named in one warning line
as having no effect in this server (``docs/deviations.md`` says why).

To make an accepted flag act, add its :class:`Settings` field (the flag's name
with underscores, or ``dest=``) and drop the row's ``effect=``; the flag test
(``tests/test_flags.py``) then expects the field to be set. This server's own
flags are in :data:`OWN_FLAGS`.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ._version import TRITON_COMPAT_VERSION, __version__
from .settings import GRPC_MAX_MESSAGE_BYTES, Settings

NO_EFFECT = "has no effect in this server"


# -- Triton's value syntax ------------------------------------------------------------------

def triton_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "on", "1"):
        return True
    if lowered in ("false", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"invalid value for bool option: {text}")


def int_or_bool(text: str) -> int:
    """``--log-verbose``: ``true`` is 1, ``false`` 0, else an integer."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return int(lowered == "true")
    return triton_int(text)


def triton_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"Invalid option value. Got {text}") from None


def triton_float(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"Invalid option value. Got {text}") from None


def choice(*values: str, case_sensitive: bool = False) -> Callable[[str], str]:
    def parse(text: str) -> str:
        for value in values:
            if text == value or (not case_sensitive and text.lower() == value.lower()):
                return value
        raise argparse.ArgumentTypeError(f"invalid argument '{text}'; expected one of "
                                         f"{', '.join(values)}")
    parse.__name__ = "choice"
    return parse


def named_setting(option: str, name_required: bool, name_word: str) -> Callable[[str], str]:
    """``<name>,<setting>=<value>`` (``<setting>=<value>`` when a name is optional)."""
    def parse(text: str) -> str:
        head, equals, value = text.partition("=")
        name, comma, setting = head.rpartition(",") if "," in head else ("", "", head)
        if (not equals or not setting or not value or (comma and not name)
                or (name_required and not name)):
            form = f"<{name_word}>,<setting>=<value>"
            if not name_required:
                form += " or <setting>=<value>"
            raise argparse.ArgumentTypeError(f"--{option} option format is '{form}'. Got {text}")
        return text
    parse.__name__ = "setting"
    return parse


def metrics_setting(text: str) -> str:
    setting, equals, value = text.partition("=")
    if not equals or not setting or not value or "," in setting:
        raise argparse.ArgumentTypeError(
            f"--metrics-config option format is <setting>=<value>. Got {text}")
    return text


def pair(first: Callable, second: Callable, delimiter: str, form: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        left, found, right = text.partition(delimiter)
        try:
            if not found:
                raise ValueError
            first(left)
            second(right)
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"expected {form}. Got {text}") from None
        return text
    parse.__name__ = "pair"
    return parse


def restricted(option: str) -> Callable[[str], str]:
    """``<features>:<key>=<value>``."""
    def parse(text: str) -> str:
        features, colon, rest = text.partition(":")
        key, equals, value = rest.partition("=")
        if not (features and colon and key and equals and value):
            raise argparse.ArgumentTypeError(
                f"--{option} option format is '<config name>:<setting>=<value>'. Got {text}")
        return text
    parse.__name__ = "restricted"
    return parse


def positive_int(option: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = triton_int(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"Error: --{option} must be greater than 0.")
        return value
    parse.__name__ = "positive"
    return parse


def trace_setting(text: str) -> str:
    """``--trace-config``, checked as the tracer will read it."""
    from .trace import parse_trace_config

    try:
        parse_trace_config([text])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def rate_limit_resource(text: str) -> str:
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3) or not parts[0]:
            raise ValueError
        [int(p) for p in parts[1:]]
    except ValueError:
        raise argparse.ArgumentTypeError(
            "--rate-limit-resource option format is '<resource_name>:<count>:<device>' or "
            f"'<resource_name>:<count>'. Got {text}") from None
    return text


# -- the flag table ------------------------------------------------------------------------

@dataclass(frozen=True)
class Flag:
    name: str                       # without the leading dashes
    parse: Optional[Callable]       # None: takes no value
    group: str                      # Triton's option group
    help: str
    dest: Optional[str] = None      # the Settings field; None with ``effect`` set
    effect: str = ""                # non-empty: accepted, warned about, why it changes nothing
    repeat: bool = False            # may be given several times (a list field)
    metavar: str = ""
    aliases: tuple = ()
    deprecated: str = ""            # Triton's own deprecation warning
    into: str = ""                  # a deprecated trace flag: the --trace-config it stands for

    @property
    def acts(self) -> bool:
        return not self.effect


def _f(name, parse, group, help, dest=None, **kw) -> Flag:
    if dest is None and not kw.get("effect"):
        dest = "trace_config" if kw.get("into") else name.replace("-", "_")
    return Flag(name, parse, group, help, dest, **kw)


B, I, F, S = triton_bool, triton_int, triton_float, str
GPU_ONLY = "GPU selection and device memory are left to the backends' own runtimes"
NO_CACHE = "there is no response cache"

FLAGS: tuple[Flag, ...] = (
    # Server
    _f("id", S, "Server", "Identifier for this server (reported by ServerMetadata).",
       dest="server_id"),
    _f("exit-timeout-secs", triton_float, "Server",
       "Seconds shutdown waits for in-flight inferences before exiting anyway (default 30)."),
    # Logging
    _f("log-verbose", int_or_bool, "Logging",
       "Verbose logging level: 0 disables it; >= 1 logs each request (model, version, id, "
       "status, duration) and scheduler decisions; 2 adds more detail."),
    _f("log-info", B, "Logging", "Enable/disable info-level logging (default true)."),
    _f("log-warning", B, "Logging", "Enable/disable warning-level logging (default true)."),
    _f("log-error", B, "Logging", "Enable/disable error-level logging (default true)."),
    _f("log-format", choice("default", "ISO8601", "json", case_sensitive=True), "Logging",
       "Log line format: \"default\" (LMMDD hh:mm:ss.ssssss), \"ISO8601\" "
       "(YYYY-MM-DDThh:mm:ssZ L) or \"json\" (one JSON object a line, for log shippers)."),
    _f("log-file", S, "Logging", "Write the log to this file instead of the console."),
    # Model Repository
    _f("model-repository", S, "Model Repository",
       "Path to the model repository directory (required). This server serves one "
       "repository.", aliases=("--model-store", "--repo"), metavar="PATH"),
    _f("exit-on-error", B, "Model Repository",
       "Exit if a model fails to load at start-up (default true)."),
    _f("disable-auto-complete-config", None, "Model Repository",
       "Do not auto-complete model configurations from the model files; every config must "
       "be complete."),
    _f("strict-readiness", B, "Model Repository",
       "true: ready only when every model is available; false: ready when responsive "
       "(default true)."),
    _f("model-control-mode", choice("none", "poll", "explicit"), "Model Repository",
       "Model management: none (load everything at start-up), poll (follow the repository's "
       "changes every --repository-poll-secs) or explicit (load/unload through the API; "
       "--load-model at start-up). Default none."),
    _f("repository-poll-secs", triton_float, "Model Repository",
       "Seconds between polls of the repository in poll mode (default 15; fractions allowed)."),
    _f("load-model", S, "Model Repository",
       "Model to load at start-up in explicit mode; repeatable; '*' loads all.",
       repeat=True, metavar="NAME"),
    _f("model-config-name", S, "Model Repository",
       "Read configs/<name>.pbtxt in each model directory instead of config.pbtxt, when "
       "present."),
    _f("model-load-thread-count", I, "Model Repository",
       "Threads loading models concurrently (default 4)."),
    _f("model-load-retry-count", I, "Model Repository",
       "Times a failed model load is retried (default 0)."),
    _f("model-namespacing", B, "Model Repository",
       "Serve same-named models from different repositories.",
       effect="this server serves one repository, so names cannot collide"),
    _f("enable-peer-access", B, "Model Repository", "Enable CUDA peer access between GPUs.",
       effect=GPU_ONLY),
    # HTTP
    _f("allow-http", B, "HTTP", "Listen for HTTP/REST requests."),
    _f("http-address", S, "HTTP", "Address the HTTP server binds (default 0.0.0.0)."),
    _f("http-port", I, "HTTP", "HTTP port (default 8000)."),
    _f("reuse-http-port", B, "HTTP",
       "Let several servers listen on the same HTTP port (SO_REUSEPORT)."),
    _f("http-header-forward-pattern", S, "HTTP",
       "Regular expression: HTTP headers whose names match become request parameters."),
    _f("http-thread-count", I, "HTTP",
       "Threads for the HTTP frontend's blocking calls such as model loads (default 8)."),
    _f("http-max-input-size", positive_int("http-max-input-size"), "HTTP",
       "Largest HTTP request body (also once decompressed), in bytes (default 67108864)."),
    _f("http-restricted-api", restricted("http-restricted-api"), "HTTP",
       "<apis>:<key>=<value>: requests of these API groups need header '<key>: <value>' "
       "(repeatable).", repeat=True),
    # GRPC
    _f("allow-grpc", B, "GRPC", "Listen for gRPC requests (default true)."),
    _f("grpc-address", S, "GRPC", "Address the gRPC server binds (default 0.0.0.0).",
       aliases=("--host",)),
    _f("grpc-port", I, "GRPC", "gRPC port (default 8001)."),
    _f("reuse-grpc-port", B, "GRPC",
       "Let several servers listen on the same gRPC port (SO_REUSEPORT; default false)."),
    _f("grpc-header-forward-pattern", S, "GRPC",
       "Regular expression: gRPC metadata keys that match (case-insensitively) become "
       "request parameters."),
    _f("grpc-infer-thread-count", I, "GRPC",
       "Threads serving control RPCs such as model loads, 2 to 128 (default 16); inference "
       "holds no thread."),
    _f("grpc-infer-allocation-pool-size", I, "GRPC",
       "Request/response states kept for reuse.",
       effect="grpcio allocates per call; there is no state pool to size"),
    _f("grpc-max-response-pool-size", I, "GRPC",
       "Largest number of response objects queued per stream.",
       effect="grpcio allocates per call; there is no state pool to size"),
    _f("grpc-use-ssl", B, "GRPC",
       "Serve gRPC over TLS (needs --grpc-server-cert and --grpc-server-key; default false)."),
    _f("grpc-use-ssl-mutual", B, "GRPC",
       "TLS requiring a client certificate signed by --grpc-root-cert; preempts "
       "--grpc-use-ssl (default false)."),
    _f("grpc-server-cert", S, "GRPC", "PEM server certificate file.", metavar="PEM"),
    _f("grpc-server-key", S, "GRPC", "PEM server private key file.", metavar="PEM"),
    _f("grpc-root-cert", S, "GRPC", "PEM root certificate client certificates must chain to.",
       metavar="PEM"),
    _f("grpc-infer-response-compression-level", choice("none", "low", "medium", "high"), "GRPC",
       "Compression level of inference responses (default none).",
       effect="grpcio offers compression algorithms, not Triton's levels"),
    _f("grpc-keepalive-time", I, "GRPC",
       "Milliseconds between keepalive pings (default 7200000).",
       dest="grpc_keepalive_time_ms"),
    _f("grpc-keepalive-timeout", I, "GRPC",
       "Milliseconds to wait for a keepalive ping's acknowledgement (default 20000).",
       dest="grpc_keepalive_timeout_ms"),
    _f("grpc-keepalive-permit-without-calls", B, "GRPC",
       "Allow keepalive pings with no call in flight (default false)."),
    _f("grpc-http2-max-pings-without-data", I, "GRPC",
       "Pings allowed without a data frame; 0 for no limit (default 2)."),
    _f("grpc-http2-min-recv-ping-interval-without-data", I, "GRPC",
       "Shortest time in ms between received pings before a ping strike (default 300000).",
       dest="grpc_http2_min_recv_ping_interval_without_data_ms"),
    _f("grpc-http2-max-ping-strikes", I, "GRPC",
       "Bad pings tolerated before GOAWAY; 0 for any number (default 2)."),
    _f("grpc-max-connection-age", I, "GRPC", "Longest life of a connection, in ms.",
       dest="grpc_max_connection_age_ms"),
    _f("grpc-max-connection-age-grace", I, "GRPC",
       "Grace period in ms after a connection reaches its maximum age.",
       dest="grpc_max_connection_age_grace_ms"),
    _f("grpc-restricted-protocol", restricted("grpc-restricted-protocol"), "GRPC",
       "<protocols>:<key>=<value>: calls of these groups need metadata "
       "'triton-grpc-protocol-<key>: <value>' (repeatable; groups: health, metadata, inference, "
       "shared-memory, model-config, model-repository, statistics, trace, logging).",
       repeat=True),
    # Sagemaker, Vertex AI
    _f("allow-sagemaker", B, "Sagemaker", "Listen for SageMaker requests.",
       effect="the SageMaker endpoint is not implemented"),
    _f("sagemaker-port", I, "Sagemaker", "SageMaker port (default 8080).",
       effect="the SageMaker endpoint is not implemented"),
    _f("sagemaker-safe-port-range", pair(int, int, "-", "<integer>-<integer>"), "Sagemaker",
       "Ports other endpoints may use.", effect="the SageMaker endpoint is not implemented"),
    _f("sagemaker-thread-count", I, "Sagemaker", "Threads handling SageMaker requests.",
       effect="the SageMaker endpoint is not implemented"),
    _f("allow-vertex-ai", B, "Vertex", "Listen for Vertex AI requests.",
       effect="the Vertex AI endpoint is not implemented"),
    _f("vertex-ai-port", I, "Vertex", "Vertex AI port (default 8080).",
       effect="the Vertex AI endpoint is not implemented"),
    _f("vertex-ai-thread-count", I, "Vertex", "Threads handling Vertex AI requests.",
       effect="the Vertex AI endpoint is not implemented"),
    _f("vertex-ai-default-model", S, "Vertex", "Model for single-model Vertex AI requests.",
       effect="the Vertex AI endpoint is not implemented"),
    # Metrics
    _f("allow-metrics", B, "Metrics", "Serve Prometheus metrics on /metrics (default true)."),
    _f("allow-gpu-metrics", B, "Metrics",
       "Report GPU metrics through NVML (default true; needs --allow-metrics)."),
    _f("allow-cpu-metrics", B, "Metrics",
       "Report nv_cpu_utilization and nv_cpu_memory_* (default true; needs --allow-metrics)."),
    _f("metrics-address", S, "Metrics",
       "Address the metrics server binds (default: the HTTP address)."),
    _f("metrics-port", I, "Metrics", "Metrics port (default 8002)."),
    _f("metrics-interval-ms", triton_float, "Metrics",
       "Milliseconds between samples of the GPU and CPU metrics (default 2000)."),
    _f("metrics-config", metrics_setting, "Metrics",
       "<setting>=<value>: summary_latencies=true adds the nv_inference_*_summary_us "
       "summaries; summary_quantiles=0.5:0.05,0.9:0.01 sets their quantiles. Repeatable.",
       repeat=True),
    # Tracing
    _f("trace-config", trace_setting, "Tracing",
       "[<mode>,]<setting>=<value>, repeatable: level=OFF|TIMESTAMPS|TENSORS, rate=N, "
       "count=N, mode=triton|opentelemetry, triton,file=PATH, triton,log-frequency=N, "
       "opentelemetry,url=URL.", repeat=True),
    # Response cache
    _f("cache-config", named_setting("cache-config", True, "cache name"), "Response Cache",
       "<cache>,<setting>=<value>: configure a response cache.", effect=NO_CACHE, repeat=True),
    _f("cache-directory", S, "Response Cache", "Directory of cache implementations.",
       effect=NO_CACHE),
    # Rate limiter
    _f("rate-limit", choice("execution_count", "off"), "Rate Limiter",
       "Rate limiting mode: execution_count or off (default off).",
       effect="there is no rate limiter; instances run as soon as they are free"),
    _f("rate-limit-resource", rate_limit_resource, "Rate Limiter",
       "<name>:<count>[:<device>]: resources available to the rate limiter.",
       effect="there is no rate limiter", repeat=True),
    # Memory / device
    _f("pinned-memory-pool-byte-size", I, "Memory/Device Management",
       "Pinned host memory the GPU backends stage through, in bytes (default 268435456)."),
    _f("cuda-memory-pool-byte-size", pair(int, int, ":", "<GPU device ID>:<pool byte size>"),
       "Memory/Device Management", "<device>:<bytes>: CUDA memory pool per GPU.",
       effect=GPU_ONLY, repeat=True),
    _f("cuda-virtual-address-size", pair(int, int, ":", "<GPU device ID>:<size>"),
       "Memory/Device Management", "<device>:<bytes>: virtual address size for growable state.",
       effect=GPU_ONLY, repeat=True),
    _f("min-supported-compute-capability", triton_float, "Memory/Device Management",
       "Lowest CUDA compute capability used.", effect=GPU_ONLY),
    _f("buffer-manager-thread-count", I, "Memory/Device Management",
       "Threads for tensor copies.", effect="copies run on the threads that need them"),
    _f("host-policy", named_setting("host-policy", True, "policy name"),
       "Memory/Device Management", "<policy>,<setting>=<value>: NUMA node and CPU cores.",
       effect="NUMA placement is left to the operating system", repeat=True),
    _f("model-load-gpu-limit", pair(int, float, ":", "<device_id>:<fraction>"),
       "Memory/Device Management", "<device>:<fraction>: refuse loads above this GPU memory use.",
       effect="GPU memory is not accounted per load", repeat=True),
    # Shared memory
    _f("allow-client-shm", B, "Shared Memory",
       "Allow clients to register system and CUDA shared-memory regions (default false)."),
    # Backend, repository agent
    _f("backend-directory", S, "Backend", "Directory of backend shared libraries.",
       effect="backends are Python modules of this package"),
    _f("backend-config", named_setting("backend-config", False, "backend name"), "Backend",
       "<backend>,<setting>=<value> (or <setting>=<value> for every backend), e.g. "
       "onnxruntime,default-max-batch-size=8. Repeatable.", repeat=True),
    _f("repoagent-directory", S, "Repository Agent",
       "Directory of repository agent libraries.",
       effect="repository agents are not implemented"),
    # Deprecated
    _f("strict-model-config", B, "DEPRECATED",
       "DEPRECATED: true disables auto-completion (use --disable-auto-complete-config).",
       deprecated="Warning: '--strict-model-config' has been deprecated! Please use "
                  "'--disable-auto-complete-config' instead."),
    _f("response-cache-byte-size", I, "DEPRECATED",
       "DEPRECATED: use --cache-config.", effect=NO_CACHE),
    _f("trace-file", S, "DEPRECATED", "DEPRECATED: use --trace-config triton,file=<path>.",
       into="triton,file={}",
       deprecated="Warning: '--trace-file' has been deprecated and will be removed in future "
                  "releases. Please use '--trace-config triton,file=<filepath> instead."),
    _f("trace-level", choice("off", "false", "on", "true", "min", "max", "timestamps",
                             "tensors"), "DEPRECATED",
       "DEPRECATED: use --trace-config level=<OFF|TIMESTAMPS|TENSORS>.", repeat=True,
       into="level={}",
       deprecated="Warning: '--trace-level' has been deprecated and will be removed in future "
                  "releases. Please use '--trace-config level=<OFF|TIMESTAMPS|TENSORS> instead."),
    _f("trace-rate", I, "DEPRECATED", "DEPRECATED: use --trace-config rate=<rate>.",
       into="rate={}",
       deprecated="Warning: '--trace-rate' has been deprecated and will be removed in future "
                  "releases. Please use '--trace-config rate=<rate value> instead."),
    _f("trace-count", I, "DEPRECATED", "DEPRECATED: use --trace-config count=<count>.",
       into="count={}",
       deprecated="Warning: '--trace-count' has been deprecated and will be removed in future "
                  "releases. Please use '--trace-config count=<count value> instead."),
    _f("trace-log-frequency", I, "DEPRECATED",
       "DEPRECATED: use --trace-config triton,log-frequency=<n>.", into="triton,log-frequency={}",
       deprecated="Warning: '--trace-log-frequency' has been deprecated and will be removed in "
                  "future releases. Please use '--trace-config triton,log-frequency=<log "
                  "frequency value> instead."),
)

# This server's own flags (not Triton's).
OWN_FLAGS: tuple[Flag, ...] = (
    _f("grpc-server", choice("aio"), "triton_grpc_server",
       "Serving loop (grpc.aio, the only one; kept for launch lines that name it)."),
    _f("grpc-max-message-size", I, "triton_grpc_server",
       f"Largest gRPC message in bytes (default {GRPC_MAX_MESSAGE_BYTES}).",
       dest="grpc_max_message_bytes"),
    _f("infer-codec", choice("auto", "cython", "python"), "triton_grpc_server",
       "ModelInfer wire codec (default auto: Cython when built)."),
    # limits (docs/security.md)
    _f("model-load-max-file-bytes", I, "triton_grpc_server",
       "Bytes of file: parameters one model load may carry (default 1 GiB).", metavar="BYTES"),
    _f("model-max-instance-count", I, "triton_grpc_server",
       "Instances one model's instance_group may ask for (default 64).", metavar="N"),
    # several processes per port (docs/workers.md)
    _f("workers", I, "triton_grpc_server",
       "Server processes on the same gRPC and HTTP ports under a supervisor (default 1).",
       metavar="N"),
)

GROUP_ORDER = ("Server", "Logging", "Model Repository", "HTTP", "GRPC", "Sagemaker", "Vertex",
               "Metrics", "Tracing", "Backend", "Repository Agent", "Response Cache",
               "Rate Limiter", "Memory/Device Management", "Shared Memory", "DEPRECATED",
               "triton_grpc_server")

_METAVARS = {triton_bool: "BOOL", triton_int: "INT", int_or_bool: "INT", triton_float: "FLOAT",
             str: "STRING"}


def _key(flag: Flag) -> str:
    """The argparse destination: the Settings field, or a private name for ignored and
    deprecated-trace flags."""
    if flag.dest and not flag.into:
        return flag.dest
    return "ignored__" + flag.name.replace("-", "_")


# --trace-level values (Triton's ParseTraceLevelOption) -> --trace-config level values
_TRACE_LEVELS = {"off": "OFF", "false": "OFF", "on": "TIMESTAMPS", "true": "TIMESTAMPS",
                 "min": "TIMESTAMPS", "max": "TIMESTAMPS", "timestamps": "TIMESTAMPS",
                 "tensors": "TENSORS"}


def version_text() -> str:
    """This server's version, Triton's protocol version, and the backends importable here."""
    import importlib.metadata
    import importlib.util

    lines = [f"triton_grpc_server {__version__} (Triton protocol {TRITON_COMPAT_VERSION})"]
    # (backend, module to look for, distributions that provide it); nothing is imported
    for backend, module, distributions in (
            ("onnxruntime", "onnxruntime", ("onnxruntime-gpu", "onnxruntime")),
            ("pytorch", "torch", ("torch",)),
            ("tensorrt", "tensorrt_lean", ("tensorrt-lean-cu13", "tensorrt-lean", "tensorrt"))):
        found = None
        if importlib.util.find_spec(module) is not None:
            for distribution in distributions:
                try:
                    found = f"{distribution} {importlib.metadata.version(distribution)}"
                    break
                except importlib.metadata.PackageNotFoundError:
                    continue
            found = found or "installed"
        lines.append(f"  backend {backend}: {found or 'not installed'}")
    return "\n".join(lines)


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help=kwargs.get("help"))

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="triton_grpc_server",
        usage="%(prog)s --model-repository PATH [options]",
        description="Inference server speaking NVIDIA Triton's protocols; takes tritonserver's "
                    "flags. Flags marked (no effect) are accepted for compatibility.")
    p.add_argument("--version", action=_VersionAction,
                   help="print the version and the backends installed, then exit")
    groups = {name: p.add_argument_group(name) for name in GROUP_ORDER}
    for flag in FLAGS + OWN_FLAGS:
        names = (f"--{flag.name}", *flag.aliases)
        text = flag.help + (f" (no effect: {flag.effect})" if flag.effect else "")
        group = groups[flag.group]
        if flag.parse is None:
            group.add_argument(*names, dest=_key(flag), action="store_const", const=True,
                               help=text)
            continue
        metavar = flag.metavar or _METAVARS.get(flag.parse, "VALUE")
        group.add_argument(*names, dest=_key(flag), type=flag.parse, metavar=metavar,
                           action="append" if flag.repeat or flag.name == "model-repository"
                           else "store", help=text)
    return p


def _fail(parser: argparse.ArgumentParser, message: str) -> None:
    """Triton's post-parse checks: one line, exit 1."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def _check_restrictions(parser: argparse.ArgumentParser, given: dict) -> None:
    """Malformed restriction values stop the launch, as Triton's parser does."""
    if not (given.get("grpc_restricted_protocol") or given.get("http_restricted_api")):
        return
    from .restrictions import RestrictionError, Restrictions

    try:
        Restrictions.for_grpc(given.get("grpc_restricted_protocol") or [])
        Restrictions.for_http(given.get("http_restricted_api") or [])
    except RestrictionError as exc:
        parser.error(str(exc).strip())


def parse_settings(argv: Optional[Sequence[str]] = None) -> Settings:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    given: dict = {}
    ignored: list[str] = []
    deprecated_trace: list[str] = []
    for flag in FLAGS + OWN_FLAGS:
        value = args.get(_key(flag))
        if value is None:
            continue
        if flag.deprecated:
            print(flag.deprecated, file=sys.stderr)
        if flag.effect:
            ignored.append(flag.name)
        elif flag.into:  # Triton's deprecated trace flags: the --trace-config they stand for
            deprecated_trace.extend(flag.into.format(_TRACE_LEVELS.get(str(v).lower(), v))
                                    for v in (value if isinstance(value, list) else [value]))
        else:
            given[flag.dest] = value
    if deprecated_trace:  # --trace-config, given too, wins (Triton: "Overriding deprecated")
        given["trace_config"] = deprecated_trace + list(given.get("trace_config") or [])
    _check_restrictions(parser, given)
    repositories = list(dict.fromkeys(given.pop("model_repository", None) or []))
    if len(repositories) > 1:
        _fail(parser, "this server serves one model repository; got --model-repository "
              + ", ".join(repositories))
    if repositories:
        given["model_repository"] = repositories[0]
    if given.pop("disable_auto_complete_config", False):
        given["strict_model_config"] = True
    if given.get("load_model") and given.get("model_control_mode", "none") != "explicit":
        _fail(parser, "Use of '--load-model' requires setting '--model-control-mode=explicit' "
              "as well.")
    threads = given.get("grpc_infer_thread_count")
    if threads is not None and not 2 <= threads <= 128:
        _fail(parser, "invalid argument for --grpc_infer_thread_count. Must be in the range 2 "
              "to 128.")
    if given.get("model_config_name") == "":
        _fail(parser, "empty argument for --model-config-name")
    if not given.get("allow_metrics", True):
        given["allow_gpu_metrics"] = given["allow_cpu_metrics"] = False
    given["ignored_flags"] = ignored
    return Settings(**given)


def main(argv: Optional[Sequence[str]] = None) -> int:
    settings = parse_settings(argv)
    # gRPC's C core logs to stderr on its own (e.g. a port it cannot bind, which this
    # server reports in one clear line); read when grpc is first imported, i.e. below.
    if "GRPC_VERBOSITY" not in os.environ:
        os.environ["GRPC_VERBOSITY"] = "ERROR" if settings.log_verbose > 0 else "NONE"
    from . import logs

    logs.configure(settings)
    logs.warn_ignored_flags(settings.ignored_flags, {f.name: f.effect for f in FLAGS})
    if settings.workers > 1 and settings.worker_index < 0:  # docs/workers.md
        from .workers.supervisor import supervise

        return supervise(list(sys.argv[1:] if argv is None else argv), settings)
    from .server import run

    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
