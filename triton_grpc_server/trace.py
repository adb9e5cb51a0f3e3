"""The trace extension: which requests are traced, and Triton's trace file.

Settings follow Triton's ``TraceManager``: one global setting (from
``--trace-config``) and optional per-model settings; a model setting keeps the
fields it was given and takes the rest from the global one, and an update with
an empty value list clears a field back to its fallback. ``TraceSetting`` RPC
values are lists of strings, parsed and checked with Triton's texts.

Each setting samples every ``trace_rate``-th request while ``trace_count``
(-1: unlimited) lasts. A sampled request records Triton's timestamps
(``REQUEST_START`` .. ``REQUEST_END``) and, at level TENSORS, its input and
output tensors, and is written as Triton's JSON trace file: an array of
objects per trace id. With ``log_frequency`` N > 0 every N traces go to
``<file>.<k>``; otherwise they are appended to ``<file>`` as they finish.
``trace_mode=opentelemetry`` exports a span per request through the optional
``opentelemetry-sdk`` instead (``pip install triton_grpc_server[trace]``).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Optional

from .errors import InvalidArgument, Unsupported

log = logging.getLogger(__name__)

TIMESTAMPS = "TIMESTAMPS"
TENSORS = "TENSORS"
TRITON = "triton"
OPENTELEMETRY = "opentelemetry"
MIN_TRACE_COUNT = -1
UINT32_MAX = 2**32 - 1
INT32_MAX = 2**31 - 1


class TraceFile:
    """One trace file, shared by every setting naming it (Triton's ``TraceFile``)."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._first = True
        self._index = 0

    def save(self, records: list[str], to_index_file: bool) -> None:
        if not self.path or not records:
            return
        body = ",".join(records)
        try:
            with self._lock:
                if to_index_file:
                    with open(f"{self.path}.{self._index}", "w") as f:
                        f.write("[" + body + "]")
                    self._index += 1
                    return
                # One JSON array, kept valid after every write: "]" is rewritten each time.
                mode = "w" if self._first else "r+"
                with open(self.path, mode) as f:
                    if self._first:
                        f.write("[" + body + "]")
                    else:
                        f.seek(0, 2)
                        f.seek(f.tell() - 1)
                        f.write("," + body + "]")
                self._first = False
        except OSError as exc:
            log.error("failed creating trace file: %s", exc)


class TraceSetting:
    """One immutable-by-RPC setting plus its sampling counters."""

    def __init__(self, level: frozenset, rate: int, count: int, log_frequency: int,
                 file: TraceFile, mode: str, config: dict, specified: frozenset = frozenset()):
        self.level, self.rate, self.count, self.log_frequency = level, rate, count, log_frequency
        self.file, self.mode, self.config, self.specified = file, mode, config, specified
        self._lock = threading.Lock()
        self._sampled = 0
        self._pending: list[str] = []
        if not level:
            self.invalid_reason = "tracing is disabled"
        elif rate == 0:
            self.invalid_reason = "sample rate must be non-zero"
        elif mode == TRITON and not file.path:
            self.invalid_reason = "trace file name is not given"
        else:
            self.invalid_reason = ""

    def valid(self) -> bool:
        return not self.invalid_reason and self.count != 0

    def sample(self) -> bool:
        """Count one request; true when it is to be traced."""
        if not self.level:
            return False
        with self._lock:
            if not self.valid():
                return False
            self._sampled += 1
            if self._sampled % self.rate:
                return False
            if self.count > 0:
                self.count -= 1
            return True

    def write(self, records: list[str]) -> None:
        """Save one finished trace: appended to the file at once, or with ``log_frequency``
        N, every N traces to the next indexed file."""
        if not self.log_frequency:
            self.file.save([",".join(records)], to_index_file=False)
            return
        with self._lock:
            self._pending.append(",".join(records))
            if len(self._pending) < self.log_frequency:
                return
            batch, self._pending = self._pending, []
        self.file.save(batch, to_index_file=True)

    def close(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        self.file.save(batch, to_index_file=self.log_frequency != 0)

    def as_response(self) -> dict[str, list[str]]:
        """The TraceSetting RPC's map, as Triton fills it."""
        levels = [lv for lv in (TIMESTAMPS, TENSORS) if lv in self.level] or ["OFF"]
        values = {"trace_level": levels, "trace_rate": [str(self.rate)],
                  "trace_count": [str(self.count)]}
        if self.mode == TRITON:
            values["log_frequency"] = [str(self.log_frequency)]
            values["trace_file"] = [self.file.path]
        values["trace_mode"] = [self.mode]
        for key, value in self.config.get(self.mode, {}).items():
            if key not in ("file", "log-frequency"):
                values[key] = [str(value)]
        return values


_FIELDS = ("level", "rate", "count", "log_frequency")


def parse_update(values: dict[str, list[str]]) -> dict:
    """TraceSetting RPC values -> ``{field: new value or None (clear)}``, Triton's checks."""
    update = {}
    if "trace_file" in values:
        raise Unsupported("trace file location can not be updated through network protocol")
    if "trace_level" in values:
        given = list(values["trace_level"])
        if not given:
            update["level"] = None
        else:
            level = set()
            for text in given:
                if text == "OFF":
                    if len(given) != 1:
                        raise InvalidArgument("Expect only one trace level 'OFF' is specified")
                elif text in (TIMESTAMPS, TENSORS):
                    level.add(text)
            if level or given == ["OFF"]:
                update["level"] = frozenset(level)
    for key, field, low, high in (("trace_rate", "rate", 0, UINT32_MAX),
                                  ("trace_count", "count", MIN_TRACE_COUNT, INT32_MAX),
                                  ("log_frequency", "log_frequency", 0, UINT32_MAX)):
        if key not in values:
            continue
        given = list(values[key])
        if not given:
            update[field] = None
            continue
        if len(given) != 1:
            raise InvalidArgument(f"expect only 1 value for '{key}'")
        update[field] = _parse_int(key, given[0], low, high)
    return update


def _parse_int(key: str, text: str, low: int, high: int) -> int:
    # std::stoi: leading whitespace and sign, then digits; trailing text is ignored
    stripped = text.lstrip()
    digits = len(stripped) - len(stripped.lstrip("+-"))
    body = stripped[digits:]
    end = len(body) - len(body.lstrip("0123456789"))
    if digits > 1 or end == 0:
        raise InvalidArgument(f"Unable to parse '{key}', got: {text}")
    value = int(stripped[:digits + end])
    if value < -2**31 or value > INT32_MAX:
        raise InvalidArgument(f"Unable to parse '{key}', value is out of range [ {low}, {high} ], "
                              f"got: {text}")
    if key == "trace_count" and value < MIN_TRACE_COUNT:
        raise InvalidArgument(f"Unable to parse '{key}'. Expecting value >= {MIN_TRACE_COUNT}, "
                              f"got: {text}")
    return value & UINT32_MAX if high == UINT32_MAX else value


def parse_trace_config(options: list[str]) -> dict[str, dict[str, str]]:
    """``--trace-config`` values -> ``{mode or "": {setting: value}}`` (Triton's syntax:
    ``<setting>=<value>`` or ``<mode>,<setting>=<value>``)."""
    config: dict[str, dict[str, str]] = {}
    for arg in options:
        mode = ""
        comma = arg.find(",")
        if comma == 0:
            raise ValueError("No trace mode specified. --trace-config option format is "
                             f"<trace mode>,<setting>=<value> or <setting>=<value>. Got {arg}")
        if comma > 0:
            mode = arg[:comma].lower()
            if mode not in (TRITON, OPENTELEMETRY):
                raise ValueError(f"invalid value for trace mode option: {mode}. Available "
                                 "options are \"triton\" and \"opentelemetry\"")
        setting, eq, value = arg[comma + 1:].partition("=")
        if not eq or not setting or not value:
            raise ValueError("--trace-config option format is '<trace mode>,<setting>=<value>'. "
                             f"Got {arg}")
        config.setdefault(mode, {})[setting] = value
    return config


class Trace:
    """One sampled request: its id, setting and timestamps."""

    __slots__ = ("id", "setting", "model_name", "model_version", "request_id", "stamps",
                 "tensors", "finished")

    def __init__(self, trace_id: int, setting: TraceSetting, model_name: str,
                 model_version: int, request_id: str):
        self.id, self.setting = trace_id, setting
        self.model_name, self.model_version, self.request_id = (
            model_name, model_version, request_id)
        self.stamps: list[tuple[str, int]] = []
        self.tensors: list[str] = []
        self.finished = False

    def wrap(self, sender, timing) -> "TracedSender":
        """A sender that records output tensors (level TENSORS) and ends the trace with
        the final answer."""
        return TracedSender(self, sender, timing)

    def record_inputs(self, inputs) -> None:
        if self.tensors_wanted:
            for name, array in inputs.items():
                self.tensor("TENSOR_QUEUE_INPUT", name, array)

    def record_outputs(self, response) -> None:
        if self.tensors_wanted and response is not None:
            for output in response.outputs:
                data = output.data
                if output.datatype == "BYTES":
                    data = _split_bytes(data)
                self.tensor("TENSOR_BACKEND_OUTPUT", output.name, data)

    @property
    def tensors_wanted(self) -> bool:
        return TENSORS in self.setting.level

    def tensor(self, activity: str, name: str, array) -> None:
        import numpy as np

        from .tensors import _NUMPY_TO_WIRE

        array = np.asarray(array)
        datatype = "BYTES" if array.dtype == object else _NUMPY_TO_WIRE.get(array.dtype,
                                                                            str(array.dtype))
        if array.dtype == object:
            data = ",".join(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                            for v in array.reshape(-1))
        else:
            data = ",".join(str(v) for v in array.reshape(-1).tolist())
        self.tensors.append(json.dumps(
            {"id": self.id, "activity": activity, "tensor": {
                "name": name, "data": data, "shape": ",".join(str(d) for d in array.shape),
                "dtype": datatype}}, separators=(",", ":")))

    def finish(self, timing=None) -> None:
        """Record the timestamps the request's timing implies and write the trace (once)."""
        if self.finished:
            return
        self.finished = True
        now = time.monotonic_ns()
        if timing is not None:
            start = timing.start_ns
            compute = start + timing.queue_ns
            stamps = [("REQUEST_START", start), ("QUEUE_START", start),
                      ("COMPUTE_START", compute),
                      ("COMPUTE_INPUT_END", compute + timing.compute_input_ns),
                      ("COMPUTE_OUTPUT_START", compute + timing.compute_input_ns
                       + timing.compute_infer_ns),
                      ("COMPUTE_END", compute + timing.compute_input_ns
                       + timing.compute_infer_ns + timing.compute_output_ns)]
            self.stamps[:0] = stamps
        self.stamps.append(("REQUEST_END", now))
        if self.setting.mode == OPENTELEMETRY:
            _export_span(self)
            return
        head = {"id": self.id, "model_name": self.model_name,
                "model_version": self.model_version}
        if self.request_id:
            head["request_id"] = self.request_id
        records = [json.dumps(head, separators=(",", ":"))]
        records += [json.dumps({"id": self.id, "timestamps": [{"name": n, "ns": ns}]},
                               separators=(",", ":")) for n, ns in self.stamps]
        records += self.tensors
        self.setting.write(records)


class TracedSender:
    """Wraps a traced request's ``ResponseSender`` (see :meth:`Trace.wrap`)."""

    __slots__ = ("trace", "sender", "timing")

    def __init__(self, trace: Trace, sender, timing):
        self.trace, self.sender, self.timing = trace, sender, timing

    def send(self, response, *, final: bool) -> None:
        self.trace.record_outputs(response)
        if final:
            self.trace.finish(self.timing)
        self.sender.send(response, final=final)

    def send_error(self, error: BaseException, *, final: bool = True) -> None:
        if final:
            self.trace.finish(self.timing)
        self.sender.send_error(error, final=final)

    def __getattr__(self, name):
        return getattr(self.sender, name)


def _split_bytes(data) -> list:
    """Triton's BYTES layout (uint32 LE length + bytes per element) -> the elements."""
    view, items, offset = memoryview(data).cast("B"), [], 0
    while offset + 4 <= len(view):
        length = int.from_bytes(view[offset:offset + 4], "little")
        items.append(view[offset + 4:offset + 4 + length].tobytes())
        offset += 4 + length
    import numpy as np

    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


class TraceManager:
    """Global and per-model settings, and the sampling entry point of the data plane."""

    def __init__(self, level: frozenset = frozenset(), rate: int = 1000, count: int = -1,
                 log_frequency: int = 0, file: str = "", mode: str = TRITON,
                 config: Optional[dict] = None):
        self._lock = threading.Lock()
        self._files: dict[str, TraceFile] = {}
        self._next_id = 1
        config = config or {}
        self._default = TraceSetting(level, rate, count, log_frequency, self._file(file),
                                     mode, config)
        self._global = self._default
        self._models: dict[str, TraceSetting] = {}
        self._fallback_models: set[str] = set()
        # Nothing sampled anywhere: the per-request check is one attribute read.
        self.active = bool(level)

    @classmethod
    def from_settings(cls, settings) -> "TraceManager":
        options = getattr(settings, "trace_config", None) or []
        config = parse_trace_config(options)
        glob = config.get("", {})
        mode = glob.get("mode", TRITON).lower()
        if mode not in (TRITON, OPENTELEMETRY):
            raise ValueError(f"invalid value for trace mode option: {mode}. Available options "
                             "are \"triton\" and \"opentelemetry\"")
        level = frozenset()
        if "level" in glob:
            text = glob["level"].upper()
            if text not in ("OFF", TIMESTAMPS, TENSORS):
                raise ValueError(f"invalid value for trace level option: {glob['level']}")
            level = frozenset() if text == "OFF" else frozenset([text])
        triton = config.get(TRITON, {})
        return cls(level=level, rate=int(glob.get("rate", 1000)),
                   count=int(glob.get("count", -1)),
                   log_frequency=int(triton.get("log-frequency", 0)),
                   file=triton.get("file", ""), mode=mode, config=config)

    def _file(self, path: str) -> TraceFile:
        found = self._files.get(path)
        if found is None:
            found = self._files[path] = TraceFile(path)
        return found

    def setting(self, model_name: str = "") -> TraceSetting:
        return self._models.get(model_name, self._global) if model_name else self._global

    def settings(self, model_name: str = "") -> dict[str, list[str]]:
        return self.setting(model_name).as_response()

    def update(self, model_name: str, values: dict[str, list[str]]) -> dict[str, list[str]]:
        """The TraceSetting RPC: apply ``values`` (none: just read), return the result."""
        if values:
            update = parse_update(values)
            with self._lock:
                self._update_locked(model_name, update)
                if not model_name:  # models without their own value follow the global one
                    for name in list(self._fallback_models):
                        self._update_locked(name, {})
                self.active = any(s.level for s in [self._global, *self._models.values()])
        return self.settings(model_name)

    def _update_locked(self, model_name: str, update: dict) -> None:
        current = self._models.get(model_name) if model_name else self._global
        fallback = self._global if model_name else self._default
        values = {f: getattr(fallback, f) for f in _FIELDS}
        specified = set()
        for field in _FIELDS:
            if field in update and update[field] is None:
                continue  # cleared
            if field in update:
                values[field] = update[field]
                specified.add(field)
            elif current is not None and field in current.specified:
                values[field] = getattr(current, field)
                specified.add(field)
        if model_name:
            if not specified:
                self._models.pop(model_name, None)
                self._fallback_models.discard(model_name)
                return
            self._fallback_models.add(model_name)
        new = TraceSetting(frozenset(values["level"]), values["rate"], values["count"],
                           values["log_frequency"], fallback.file, fallback.mode,
                           fallback.config, frozenset(specified))
        if new.invalid_reason and new.level:
            raise InvalidArgument(f"Attempting to set invalid trace setting :{new.invalid_reason}")
        old = current
        if model_name:
            self._models[model_name] = new
        else:
            self._global = new
        if old is not None and old is not self._default:
            old.close()

    def start(self, model_name: str, model_version: int, request_id: str) -> Optional[Trace]:
        """A :class:`Trace` when this request is sampled, else None."""
        if not self.active:
            return None
        setting = self.setting(model_name)
        if not setting.sample():
            return None
        with self._lock:
            trace_id, self._next_id = self._next_id, self._next_id + 1
        return Trace(trace_id, setting, model_name, model_version, request_id)

    def close(self) -> None:
        for setting in {id(s): s for s in [self._global, *self._models.values()]}.values():
            setting.close()
        _shutdown_open_telemetry()


_tracer = None
_provider = None
_otel_lock = threading.Lock()


def _export_span(trace: Trace) -> None:
    """One OpenTelemetry span per request with Triton's timestamps as events."""
    global _tracer
    with _otel_lock:
        if _tracer is None:
            _tracer = _open_telemetry_tracer(trace.setting.config.get(OPENTELEMETRY, {}))
    stamps = dict(trace.stamps)
    start = stamps.get("REQUEST_START", trace.stamps[0][1])
    # The SDK wants wall-clock ns; the stamps are monotonic.
    offset = time.time_ns() - time.monotonic_ns()
    span = _tracer.start_span(trace.model_name, start_time=start + offset, attributes={
        "triton.model_name": trace.model_name, "triton.model_version": trace.model_version,
        "triton.trace_id": trace.id, "triton.request_id": trace.request_id})
    for name, ns in trace.stamps:
        span.add_event(name, timestamp=ns + offset)
    span.end(end_time=stamps["REQUEST_END"] + offset)


def _open_telemetry_tracer(options: dict):
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError("trace_mode opentelemetry needs the opentelemetry-sdk package "
                           "(pip install 'triton_grpc_server[trace]')") from exc
    attributes = {"service.name": "triton-inference-server"}
    for item in options.get("resource", "").split(","):
        key, eq, value = item.partition("=")
        if eq:
            attributes[key] = value
    provider = TracerProvider(resource=Resource.create(attributes))
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=options.get("url", "http://localhost:4318/v1/traces"))
    except ImportError:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporter = ConsoleSpanExporter()
    batching = {key: int(options[name]) for name, key in (
        ("bsp_max_queue_size", "max_queue_size"), ("bsp_schedule_delay", "schedule_delay_millis"),
        ("bsp_max_export_batch_size", "max_export_batch_size")) if name in options}
    provider.add_span_processor(BatchSpanProcessor(exporter, **batching))
    global _provider
    _provider = provider
    return provider.get_tracer("triton_grpc_server")


def _shutdown_open_telemetry() -> None:
    """Flush the spans still batched (server shutdown)."""
    global _provider, _tracer
    with _otel_lock:
        provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()
