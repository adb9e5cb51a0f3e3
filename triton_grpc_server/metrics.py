"""Prometheus metrics with Triton's names, types and labels, on ``/metrics`` only.

Per-model figures are not counted twice: a collector reads each loaded
version's :class:`~triton_grpc_server.stats.ModelStats` at scrape time and
reports Triton's ``nv_inference_*`` families (labels ``model`` and
``version``; durations in microseconds). Counters are typed ``counter`` under
Triton's exact names, without the ``_total`` suffix ``prometheus_client``'s
own text writer appends to every counter, so this module renders the
collected families itself (:func:`render`); dashboards written for Triton work
unchanged.

With ``--metrics-config summary_latencies=true`` each version also keeps a
sliding window (Triton's: the last 60 s) of request, queue and compute
durations, reported as the ``nv_inference_*_summary_us`` summaries with
quantiles (``summary_quantiles``). GPU figures come from NVML
(``nvidia-ml-py``) and CPU figures from ``/proc``, sampled every
``--metrics-interval-ms``.
"""
from __future__ import annotations

import collections
import http.server
import logging
import math
import threading
import time
from typing import Iterable, Optional

from . import stats as stats_module
from .stats import FAILURE_REASONS

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (name, help, attribute of ModelStats or a (Duration attribute, field))
_MODEL_COUNTERS = (
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes",
     ("success", "count")),
    ("nv_inference_count", "Number of inferences performed (does not include cached requests)",
     "inference_count"),
    ("nv_inference_exec_count",
     "Number of model executions performed (does not include cached requests)",
     "execution_count"),
    ("nv_inference_request_duration_us",
     "Cumulative inference request duration in microseconds (includes cached requests)",
     ("success", "ns")),
    ("nv_inference_queue_duration_us",
     "Cumulative inference queuing duration in microseconds (includes cached requests)",
     ("queue", "ns")),
    ("nv_inference_compute_input_duration_us",
     "Cumulative compute input duration in microseconds (does not include cached requests)",
     ("compute_input", "ns")),
    ("nv_inference_compute_infer_duration_us",
     "Cumulative compute inference duration in microseconds (does not include cached requests)",
     ("compute_infer", "ns")),
    ("nv_inference_compute_output_duration_us",
     "Cumulative inference compute output duration in microseconds (does not include cached "
     "requests)", ("compute_output", "ns")),
)

# Summary families, in the order LatencySummaries.observe takes their values.
_SUMMARIES = (
    ("nv_inference_request_summary_us",
     "Summary of inference request duration in microseconds (includes cached requests)"),
    ("nv_inference_queue_summary_us",
     "Summary of inference queuing duration in microseconds (includes cached requests)"),
    ("nv_inference_compute_input_summary_us",
     "Cumulative compute input duration in microseconds (does not include cached requests)"),
    ("nv_inference_compute_infer_summary_us",
     "Cumulative compute inference duration in microseconds (does not include cached requests)"),
    ("nv_inference_compute_output_summary_us",
     "Cumulative inference compute output duration in microseconds (does not include cached "
     "requests)"),
)
DEFAULT_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)  # Triton's defaults
SUMMARY_MAX_AGE_S = 60.0                           # prometheus-cpp's default window
_SUMMARY_WINDOW_CAP = 100_000                      # observations kept per version at most


def _value(stats, source) -> float:
    if isinstance(source, str):
        return getattr(stats, source)
    duration = getattr(stats, source[0])
    return duration.count if source[1] == "count" else duration.ns // 1000


def parse_quantiles(text: str) -> tuple[float, ...]:
    """``0.5:0.05,0.9:0.01`` -> (0.5, 0.9); bad pairs are skipped with an error, as Triton."""
    quantiles = []
    for pair in text.split(","):
        quantile, colon, error = pair.partition(":")
        try:
            if not colon:
                raise ValueError("no ':' delimiter found")
            float(error)
            quantiles.append(float(quantile))
        except ValueError as exc:
            log.error("Invalid option: [%s]. Expected format is <quantile>:<error> (%s)",
                      pair, exc)
    return tuple(quantiles)


class LatencySummaries:
    """One version's latency window for the summary families; thread-safe."""

    def __init__(self, max_age_s: float = SUMMARY_MAX_AGE_S):
        self.max_age_ns = int(max_age_s * 1e9)
        self._lock = threading.Lock()
        self._window: collections.deque = collections.deque(maxlen=_SUMMARY_WINDOW_CAP)
        self.count = 0
        self.sums_us = [0.0] * len(_SUMMARIES)

    def observe(self, request_ns: int, queue_ns: int, input_ns: int, infer_ns: int,
                output_ns: int) -> None:
        now = time.monotonic_ns()
        values = (request_ns / 1000, queue_ns / 1000, input_ns / 1000, infer_ns / 1000,
                  output_ns / 1000)
        with self._lock:
            self.count += 1
            sums = self.sums_us
            for index, value in enumerate(values):
                sums[index] += value
            window = self._window
            window.append((now, values))
            horizon = now - self.max_age_ns
            while window[0][0] < horizon:
                window.popleft()

    def snapshot(self, quantiles) -> tuple[int, list[float], list[list[float]]]:
        """(count, sums in us, per family the quantile values over the window)."""
        horizon = time.monotonic_ns() - self.max_age_ns
        with self._lock:
            rows = [values for stamp, values in self._window if stamp >= horizon]
            count, sums = self.count, list(self.sums_us)
        per_family = []
        for index in range(len(_SUMMARIES)):
            ordered = sorted(row[index] for row in rows)
            per_family.append([_quantile(ordered, q) for q in quantiles])
        return count, sums, per_family


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan  # prometheus-cpp reports NaN for an empty window
    rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


class ModelCollector:
    """Triton's per-model families, read from the repository's loaded versions."""

    def __init__(self, repository, quantiles: Optional[tuple] = None):
        self.repository = repository
        self.quantiles = quantiles  # None: no summaries

    def _versions(self):
        for name, entry in sorted(self.repository.entries().items()):
            for number, version in sorted(entry.versions.items()):
                stats = getattr(version, "stats", None)
                if version.ready and stats is not None:
                    yield name, str(number), version, stats

    def collect(self) -> Iterable:
        from prometheus_client.core import Metric

        versions = list(self._versions())
        rows = [(model, number, stats.snapshot()) for model, number, _, stats in versions]
        for name, help_text, source in _MODEL_COUNTERS:
            metric = Metric(name, help_text, "counter")
            for model, version, stats in rows:
                metric.add_sample(name, {"model": model, "version": version},
                                  float(_value(stats, source)))
            yield metric
        failure = Metric("nv_inference_request_failure",
                         "Number of failed inference requests, all batch sizes", "counter")
        for model, version, stats in rows:
            for reason in FAILURE_REASONS:
                failure.add_sample("nv_inference_request_failure",
                                   {"model": model, "reason": reason, "version": version},
                                   float(stats.failures[reason]))
        yield failure
        pending = Metric("nv_inference_pending_request_count",
                         "Instantaneous number of pending requests awaiting execution "
                         "per-model.", "gauge")
        for model, version, stats in rows:
            pending.add_sample(pending.name, {"model": model, "version": version},
                               float(stats.pending))
        yield pending
        load = Metric("nv_model_load_duration_secs", "Model load time in seconds", "gauge")
        for model, number, version, _ in versions:
            seconds = getattr(version, "load_duration_s", None)
            if seconds is not None:
                load.add_sample(load.name, {"model": model, "version": number}, float(seconds))
        yield load
        if self.quantiles is not None:
            yield from self._summaries(versions)

    def _summaries(self, versions) -> Iterable:
        from prometheus_client.core import Metric

        families = [Metric(name, help_text, "summary") for name, help_text in _SUMMARIES]
        for model, number, _, stats in versions:
            summaries = getattr(stats, "summaries", None)
            if summaries is None:
                continue
            count, sums, per_family = summaries.snapshot(self.quantiles)
            labels = {"model": model, "version": number}
            for family, total, values in zip(families, sums, per_family):
                for quantile, value in zip(self.quantiles, values):
                    family.add_sample(family.name, {**labels, "quantile": repr(quantile)}, value)
                family.add_sample(family.name + "_sum", labels, total)
                family.add_sample(family.name + "_count", labels, float(count))
        yield from families


class Sampler(threading.Thread):
    """Samples GPU and CPU figures every ``--metrics-interval-ms`` (Triton polls them so)."""

    def __init__(self, interval_ms: float, sources):
        super().__init__(daemon=True, name="metrics-sampler")
        self.interval_s = max(interval_ms, 1.0) / 1000.0
        self.sources = [s for s in sources if s is not None]
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for source in self.sources:
                try:
                    source.sample()
                except Exception as exc:  # a failing source must not end sampling
                    log.debug("metrics sample failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()


class CpuCollector:
    """``nv_cpu_utilization`` (over the last interval) and ``nv_cpu_memory_*`` from /proc."""

    def __init__(self):
        self.utilization = 0.0
        self.total_bytes = self.used_bytes = 0.0
        self._last = None
        self.sample()

    @classmethod
    def create(cls) -> Optional["CpuCollector"]:
        try:
            return cls()
        except OSError as exc:  # not Linux: no /proc
            log.info("CPU metrics disabled: %s", exc)
            return None

    def sample(self) -> None:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait, as Triton
        busy = sum(fields[:8]) - idle
        if self._last is not None:
            busy_delta, idle_delta = busy - self._last[0], idle - self._last[1]
            total = busy_delta + idle_delta
            self.utilization = busy_delta / total if total > 0 else 0.0
        self._last = (busy, idle)
        memory = {}
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                key, _, rest = line.partition(":")
                memory[key] = int(rest.split()[0]) * 1024
        self.total_bytes = float(memory.get("MemTotal", 0))
        self.used_bytes = float(memory.get("MemTotal", 0) - memory.get("MemAvailable", 0))

    def collect(self) -> Iterable:
        from prometheus_client.core import Metric

        for name, help_text, value in (
                ("nv_cpu_utilization", "CPU utilization rate [0.0 - 1.0]", self.utilization),
                ("nv_cpu_memory_total_bytes", "CPU total memory (RAM), in bytes",
                 self.total_bytes),
                ("nv_cpu_memory_used_bytes", "CPU used memory (RAM), in bytes",
                 self.used_bytes)):
            metric = Metric(name, help_text, "gauge")
            metric.add_sample(name, {}, float(value))
            yield metric


class PinnedPoolCollector:
    """``nv_pinned_memory_pool_*``: the configured size and what the GPU backends hold."""

    def __init__(self, total_bytes: int):
        self.total_bytes = total_bytes

    def collect(self) -> Iterable:
        from prometheus_client.core import Metric

        from . import gpu

        pool = gpu._pool  # only read: creating the pool here would touch CUDA
        used = float(getattr(pool, "in_use_bytes", 0)) if pool is not None else 0.0
        for name, help_text, value in (
                ("nv_pinned_memory_pool_total_bytes",
                 "Pinned memory pool total memory size, in bytes", float(self.total_bytes)),
                ("nv_pinned_memory_pool_used_bytes",
                 "Pinned memory pool used memory size, in bytes", used)):
            metric = Metric(name, help_text, "gauge")
            metric.add_sample(name, {}, value)
            yield metric


class GpuCollector:
    """``nv_gpu_*`` through NVML, labelled by ``gpu_uuid``; sampled by :class:`Sampler`."""

    _NAMES = (("util", "nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)"),
              ("total", "nv_gpu_memory_total_bytes", "GPU total memory, in bytes"),
              ("used", "nv_gpu_memory_used_bytes", "GPU used memory, in bytes"),
              ("power", "nv_gpu_power_usage", "GPU power usage in watts"),
              ("limit", "nv_gpu_power_limit", "GPU power management limit in watts"))

    def __init__(self, nvml, handles):
        self.nvml = nvml
        self.handles = handles
        self.values: dict[str, list[tuple[str, float]]] = {key: [] for key, _, _ in self._NAMES}
        self.sample()

    @classmethod
    def create(cls) -> Optional["GpuCollector"]:
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                       for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception as exc:  # no driver, no device
            log.info("GPU metrics disabled: %s", exc)
            return None
        return cls(pynvml, handles) if handles else None

    def sample(self) -> None:
        nvml = self.nvml
        values: dict[str, list[tuple[str, float]]] = {key: [] for key, _, _ in self._NAMES}
        for handle in self.handles:
            try:
                uuid = nvml.nvmlDeviceGetUUID(handle)
                uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                values["util"].append(
                    (uuid, nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0))
                values["total"].append((uuid, float(memory.total)))
                values["used"].append((uuid, float(memory.used)))
                values["power"].append((uuid, nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0))
                values["limit"].append(
                    (uuid, nvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000.0))
            except Exception as exc:  # a device that stops answering must not break the scrape
                log.debug("NVML query failed: %s", exc)
        self.values = values

    def collect(self) -> Iterable:
        from prometheus_client.core import Metric

        values = self.values
        for key, name, help_text in self._NAMES:
            metric = Metric(name, help_text, "gauge")
            for uuid, value in values[key]:
                metric.add_sample(name, {"gpu_uuid": uuid}, value)
            yield metric


# -- the text exposition ---------------------------------------------------------------------

# Exposition text appended after the registry's: callables returning text in the
# Prometheus format (Python models' own metrics keep the names and types they chose).
TEXT_SOURCES: list = []


def register_text_source(source) -> None:
    if source not in TEXT_SOURCES:
        TEXT_SOURCES.append(source)


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def render(registry) -> bytes:
    """Prometheus text format 0.0.4 with Triton's family names (see the module docstring)."""
    from prometheus_client.utils import floatToGoString

    out = []
    for metric in registry.collect():
        kind = "untyped" if metric.type == "unknown" else metric.type
        documentation = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {metric.name} {documentation}\n# TYPE {metric.name} {kind}\n")
        for sample in metric.samples:
            labels = ",".join(f'{key}="{_escape_label(str(value))}"'
                              for key, value in sorted(sample.labels.items()))
            out.append(f"{sample.name}{{{labels}}} {floatToGoString(sample.value)}\n" if labels
                       else f"{sample.name} {floatToGoString(sample.value)}\n")
    out.extend(source() for source in TEXT_SOURCES)
    return "".join(out).encode()


class _Handler(http.server.BaseHTTPRequestHandler):
    registry = None  # set per server class

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self._reply(404, b"Not Found\n", "text/plain; charset=utf-8")
            return
        try:
            body = render(self.registry)
        except Exception as exc:  # a broken collector answers 500, never kills the server
            log.error("metrics scrape failed: %s", exc)
            self._reply(500, b"metrics scrape failed\n", "text/plain; charset=utf-8")
            return
        self._reply(200, body, CONTENT_TYPE)

    def _reply(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, format, *args) -> None:  # scrapes are not worth a log line
        pass


class MetricsServer:
    """The ``/metrics`` endpoint over a registry this server owns."""

    def __init__(self, repository, registry=None, gpu: bool = True, cpu: bool = True,
                 interval_ms: float = 2000.0, quantiles: Optional[tuple] = None,
                 pinned_pool_bytes: Optional[int] = None):
        from prometheus_client import CollectorRegistry

        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.registry.register(ModelCollector(repository, quantiles))
        sampled = []
        for wanted, factory in ((gpu, GpuCollector.create), (cpu, CpuCollector.create)):
            collector = factory() if wanted else None
            if collector is not None:
                self.registry.register(collector)
                sampled.append(collector)
        if pinned_pool_bytes is not None:
            self.registry.register(PinnedPoolCollector(pinned_pool_bytes))
        self._sampler = Sampler(interval_ms, sampled) if sampled else None
        self._httpd = self._thread = None

    def bind(self, address: str, port: int) -> None:
        """Bind ``address:port`` (raises OSError); serving starts with :meth:`start`."""
        handler = type("MetricsHandler", (_Handler,), {"registry": self.registry})
        server_class = type("MetricsHTTPServer", (http.server.ThreadingHTTPServer,),
                            {"daemon_threads": True, "allow_reuse_address": True})
        self._httpd = server_class((address, port), handler)
        self.address = f"{address}:{port}"

    def start(self, address: Optional[str] = None, port: Optional[int] = None) -> None:
        if self._httpd is None:
            self.bind(address, port)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="metrics-http")
        self._thread.start()
        if self._sampler is not None:
            self._sampler.start()
        log.info("Started Metrics Service at %s", self.address)

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
        if self._httpd is not None:
            if self._thread is not None:
                self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


def enable_summaries(settings) -> Optional[tuple]:
    """The summary quantiles when ``summary_latencies=true``, installing the stats hook; else None."""
    options = settings.metrics_settings() if hasattr(settings, "metrics_settings") else {}
    if options.get("summary_latencies") != "true":
        return None
    quantiles = DEFAULT_QUANTILES
    if "summary_quantiles" in options:
        quantiles = parse_quantiles(options["summary_quantiles"]) or DEFAULT_QUANTILES
    stats_module.summary_factory = LatencySummaries
    return quantiles


def metrics_address(settings) -> str:
    return getattr(settings, "metrics_address", "") or getattr(settings, "http_address", "0.0.0.0")


def create_metrics_server(repository, settings) -> Optional[MetricsServer]:
    """The metrics endpoint, bound but not serving, or ``None`` when ``--allow-metrics false``.

    Raises OSError naming nothing: the caller says which port could not be bound.
    """
    if not getattr(settings, "allow_metrics", True):
        return None
    server = MetricsServer(repository,
                           gpu=getattr(settings, "allow_gpu_metrics", True),
                           cpu=getattr(settings, "allow_cpu_metrics", True),
                           interval_ms=getattr(settings, "metrics_interval_ms", 2000.0),
                           quantiles=enable_summaries(settings),
                           pinned_pool_bytes=getattr(settings, "pinned_memory_pool_byte_size",
                                                     None))
    server.bind(metrics_address(settings), settings.metrics_port)
    return server
