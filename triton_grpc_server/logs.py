"""Triton's log: its line formats, its switches, and the LogSettings extension.

One :class:`LogState` holds what Triton's logger holds (info/warning/error
switches, verbose level, format, file); the command line sets it at start-up
and :func:`update_settings` changes it at run time for the gRPC and HTTP
LogSettings handlers, which only translate their wire values.

Lines look like Triton's (info on stdout, warnings and errors on stderr, or
all in ``--log-file``)::

    I1201 21:44:11.215123 1234 server.py:42] "message"            (default)
    2026-12-01T21:44:11Z I 1234 server.py:42] "message"           (ISO8601)
    {"time": "...", "level": "INFO", "pid": 1234, ...}             (json)

Messages are JSON-escaped as Triton escapes them (so a message cannot forge a
line), unless ``TRITON_SERVER_ESCAPE_LOG_MESSAGES=0``. A multi-line entry (the
model table) is an escaped heading followed by the table as is.

Verbose lines are Python ``DEBUG`` records: level 10 is verbose level 1, 9 is
level 2, and so on (:func:`verbose`). Code on the request path checks
``STATE.verbose`` before building a line, so verbose logging off costs one
attribute read.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import Iterable, Mapping, Optional

from .errors import InvalidArgument, Unsupported

FORMATS = ("default", "ISO8601", "json")
_LEVEL_LETTERS = {"ERROR": "E", "CRITICAL": "E", "WARNING": "W", "INFO": "I", "DEBUG": "I"}


class LogState:
    """The live log settings (LogSettings reads and writes these)."""

    def __init__(self):
        self.info = True
        self.warning = True
        self.error = True
        self.verbose = 0
        self.format = "default"
        self.file = ""
        self.escape = os.environ.get("TRITON_SERVER_ESCAPE_LOG_MESSAGES", "1") != "0"
        self.lock = threading.Lock()


STATE = LogState()


def verbose_level(levelno: int) -> int:
    """The verbose level a record below INFO needs (DEBUG = 1, DEBUG - 1 = 2, ...)."""
    return 0 if levelno >= logging.INFO else max(1, logging.DEBUG + 1 - levelno)


def verbose(logger: logging.Logger, level: int, message: str, *args, **kwargs) -> None:
    """Log ``message`` when ``--log-verbose`` is at least ``level``."""
    if STATE.verbose >= level:
        logger.log(logging.DEBUG + 1 - level, message, *args, stacklevel=2, **kwargs)


class _Switches(logging.Filter):
    """Triton's per-severity switches; verbose lines follow the verbose level alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        level = record.levelno
        if level >= logging.ERROR:
            return STATE.error
        if level >= logging.WARNING:
            return STATE.warning
        if level >= logging.INFO:
            return STATE.info
        return STATE.verbose >= verbose_level(level)


class TritonFormatter(logging.Formatter):
    """``default``, ``ISO8601`` or ``json`` lines, chosen by :data:`STATE` at each record."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        table = getattr(record, "table", None)
        letter = _LEVEL_LETTERS.get(record.levelname, "I")
        seconds = int(record.created)
        micros = int((record.created - seconds) * 1_000_000)
        utc = time.gmtime(seconds)
        if STATE.format == "json":
            entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", utc) + f".{micros:06d}Z",
                     "level": "VERBOSE" if record.levelno < logging.INFO else record.levelname,
                     "pid": record.process, "file": record.filename, "line": record.lineno,
                     "logger": record.name, "message": message}
            if table is not None:
                entry["table"] = table
            return json.dumps(entry, ensure_ascii=False)
        if STATE.format == "ISO8601":
            prefix = time.strftime("%Y-%m-%dT%H:%M:%SZ ", utc) + letter
        else:
            prefix = letter + time.strftime("%m%d %H:%M:%S", utc) + f".{micros:06d}"
        if STATE.escape and (message or table is None):
            message = json.dumps(message, ensure_ascii=False)
        line = f"{prefix} {record.process} {record.filename}:{record.lineno}] {message}"
        return line if table is None else f"{line}\n{table}"


class _Handler(logging.StreamHandler):
    """``--log-file`` (appended to), else as Triton: info and verbose lines on stdout,
    warnings and errors on stderr."""

    def __init__(self):
        super().__init__(sys.stderr)
        self._file = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is None:  # called with the handler's lock held
            self.stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
        super().emit(record)

    def use_file(self, path: str) -> None:
        stream = open(path, "a", buffering=1, encoding="utf-8") if path else sys.stderr
        self.acquire()
        try:
            old, self._file = self._file, (stream if path else None)
            self.setStream(stream)
        finally:
            self.release()
        if old is not None:
            old.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


_handler: Optional[_Handler] = None


def _root_level() -> int:
    # Records below this are never even built; verbose level N needs DEBUG + 1 - N.
    return logging.DEBUG + 1 - STATE.verbose if STATE.verbose > 0 else logging.INFO


def configure(settings) -> None:
    """Install Triton's format and switches on the root logger (idempotent)."""
    global _handler
    with STATE.lock:
        STATE.info = bool(getattr(settings, "log_info", True))
        STATE.warning = bool(getattr(settings, "log_warning", True))
        STATE.error = bool(getattr(settings, "log_error", True))
        STATE.verbose = int(getattr(settings, "log_verbose", 0) or 0)
        STATE.format = getattr(settings, "log_format", "default") or "default"
        STATE.file = getattr(settings, "log_file", "") or ""
        root = logging.getLogger()
        if _handler is None:
            for handler in list(root.handlers):
                root.removeHandler(handler)
            _handler = _Handler()
            _handler.setFormatter(TritonFormatter())
            _handler.addFilter(_Switches())
            root.addHandler(_handler)
        _handler.use_file(STATE.file)
        root.setLevel(_root_level())
    # grpc's own logger says things like "Failed to add port" before our clearer line.
    logging.getLogger("grpc").setLevel(logging.ERROR if STATE.verbose == 0 else logging.DEBUG)


def current_settings() -> dict:
    """The six LogSettings values, with Triton's names."""
    return {"log_file": STATE.file, "log_info": STATE.info, "log_warning": STATE.warning,
            "log_error": STATE.error, "log_verbose_level": STATE.verbose,
            "log_format": STATE.format}


_SETTING_TYPES = (("log_info", bool, "boolean"), ("log_warning", bool, "boolean"),
                  ("log_error", bool, "boolean"), ("log_verbose_level", int, "int32"),
                  ("log_format", str, "string"))


def update_settings(values: Mapping[str, object], *, http: bool = False) -> dict:
    """LogSettings: apply ``values`` in Triton's order, return :func:`current_settings`.

    ``values`` are plain Python values typed as the client sent them (bool,
    int, str); names Triton does not know are ignored, as Triton ignores them.
    As in Triton, settings before a bad one stay applied. Raises
    :class:`Unsupported` for ``log_file`` (Triton does not let the network move
    the log) and :class:`InvalidArgument` for a wrong type or format.
    """
    if "log_file" in values:
        raise Unsupported("log file location can not be updated through network protocol")
    for name, kind, word in _SETTING_TYPES:
        if name not in values:
            continue
        value = values[name]
        if kind is int:
            valid = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        else:
            valid = isinstance(value, kind)
        if not valid:
            raise InvalidArgument(f"expect {word} for '{name}'")
        if name == "log_format" and value not in FORMATS:
            option = "--log_format" if http else "log_format"
            raise InvalidArgument(f"invalid argument for {option}, got: {value}")
        with STATE.lock:
            if name == "log_verbose_level":
                STATE.verbose = value
                logging.getLogger().setLevel(_root_level())
            else:
                setattr(STATE, name[len("log_"):], value)
    return current_settings()


def warn_ignored_flags(names: Iterable[str], reasons: Mapping[str, str]) -> None:
    log = logging.getLogger("triton_grpc_server")
    for name in names:
        log.warning("--%s has no effect in this server: %s (docs/deviations.md)", name,
                    reasons.get(name, ""), stacklevel=2)


# -- entries Triton writes ------------------------------------------------------------------

def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Triton's table_printer layout: ``+---+`` borders and ``| a | b |`` rows."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def row(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([border, row(header), border, *map(row, rows), border])


def log_model_table(repository, logger: Optional[logging.Logger] = None) -> None:
    """The model/version/status table Triton prints once start-up loading is done."""
    rows = []
    for name, entry in sorted(repository.entries().items()):
        if not entry.versions:
            rows.append([name, "-", f"{entry.state}: {entry.reason}" if entry.reason
                         else entry.state])
        for number, version in sorted(entry.versions.items()):
            status = version.state if version.ready or not version.reason else \
                f"{version.state}: {version.reason}"
            rows.append([name, str(number), status])
    (logger or logging.getLogger("triton_grpc_server")).info(
        "", extra={"table": format_table(["Model", "Version", "Status"], rows)}, stacklevel=2)


def log_request(logger: logging.Logger, model: str, version, request_id: str, status: str,
                duration_ns: int) -> None:
    """One verbose line per finished request (callers check ``STATE.verbose`` first)."""
    if STATE.verbose >= 1:
        logger.log(logging.DEBUG, "request model=%s version=%s id=%s status=%s duration_us=%d",
                   model, version, request_id or "<id_unknown>", status, duration_ns // 1000,
                   stacklevel=2)
