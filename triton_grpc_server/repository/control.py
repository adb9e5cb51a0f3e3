"""Model control: the none / poll / explicit modes, RepositoryModelLoad and
RepositoryModelUnload, override directories, and the repository poller.

The repository (``manager.py``) does the loading and the swap; this module
decides what to load and when, and speaks Triton's texts for the RPCs:

* ``none``: every model loads at start-up; load/unload RPCs are refused.
* ``poll``: as ``none``, then the repository is rescanned every
  ``--repository-poll-secs``: added, changed (any file or folder of the model
  directory, by mtime and size) and removed models are loaded, reloaded and
  unloaded. A reload that fails keeps the old versions serving.
* ``explicit``: only ``--load-model`` models (``*`` = all) load at start-up;
  then the RPCs decide.

Loads of one model are serialized (a lock per model name); loads of different
models, and inference on every model, run concurrently.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional

from google.protobuf import json_format

from .._proto import model_config_pb2 as mc
from ..errors import InternalError, InvalidArgument, Unavailable, clip

log = logging.getLogger(__name__)

NOT_ALLOWED = "explicit model load / unload is not allowed if polling is enabled"
FILE_PREFIX = "file:"
NAME_MAX = 255      # bytes in one path component (Linux)
PATH_MAX = 4096
# Default bound on the bytes of all ``file:`` parameters of one load (--model-load-max-file-bytes).
DEFAULT_MAX_FILE_BYTES = 1 << 30


class PollFailed(InternalError):
    """The load could not read the model from the repository or write its override
    files: Triton answers these with one INTERNAL text (the details go to the log)."""

    def __init__(self, name: str):
        super().__init__(f"failed to load '{name}', failed to poll from model repository")


def check_override_config(name: str, config: str) -> None:
    """A config override must be a JSON object that parses as a ``ModelConfig``.

    protobuf's JSON parser takes "[]" (and other non-objects) as an empty
    message; Triton's parser refuses them, and so the load fails its poll.
    """
    try:
        document = json.loads(config)
        if not isinstance(document, dict):
            raise ValueError(f"expected a JSON object, got {type(document).__name__}")
        json_format.ParseDict(document, mc.ModelConfig())
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        log.error("Poll failed for model directory '%s': Invalid config override: %s",
                  clip(name), clip(str(exc)))
        raise PollFailed(name) from None


def parameter_type(value: Any) -> str:
    """TRITONSERVER_ParameterTypeString of a load parameter's value."""
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "BYTES"
    if isinstance(value, float):
        return "DOUBLE"
    return "INVALID"


def validate_model_name(name: str) -> None:
    """Triton's ValidateModelName: a load names one directory, never a path."""
    if not name:
        raise InvalidArgument("model name must not be empty")
    if not name.strip(" \t\n\v\f\r"):
        raise InvalidArgument("model name must not contain only whitespace characters")
    if ".." in name or "/" in name or "\0" in name:
        raise InvalidArgument(
            f"invalid model name '{clip(name)}', model name must not contain path traversal "
            "characters")


class OverlongFileName(InvalidArgument):
    """A ``file:`` parameter with a path component no file system takes."""


def override_relative_path(parameter: str) -> str:
    """The path a ``file:<path>`` parameter names inside the override directory.

    Rejects (INVALID_ARG) anything that could write or read outside it:
    absolute paths, ``..`` components, empty or over-long components, NUL.
    """
    relative = parameter[len(FILE_PREFIX):]
    normalized = os.path.normpath(relative) if relative else ""
    if not relative or "\0" in relative or len(relative.encode()) > PATH_MAX:
        raise InvalidArgument(
            f"Invalid file path '{clip(relative)}' for file parameter '{clip(parameter)}'")
    parts = relative.split("/")
    if any(len(part.encode()) > NAME_MAX for part in parts):
        # Triton fails writing such a file, and reports the load's poll as failed.
        log.error("failed to write override file '%s': a path component is longer than %d "
                  "bytes", clip(parameter), NAME_MAX)
        raise OverlongFileName(parameter)
    if (relative.startswith("/") or ".." in parts or normalized in (".", "")
            or normalized == ".." or normalized.startswith("../")):
        raise InvalidArgument(
            f"Invalid file parameter '{clip(parameter)}' with normalized path "
            f"'{clip(normalized)}' must stay within model directory.")
    return normalized


def write_override_directory(name: str, files: dict[str, bytes]) -> Path:
    """A private directory (mode 0700) laid out as a model directory, holding ``files``.

    Every path is checked before anything is written, and again once resolved
    against the new directory (nothing there is a link, but check anyway).
    """
    relatives = {parameter: override_relative_path(parameter) for parameter in files}
    # The model name is only a hint in the folder's name: cut so it always fits NAME_MAX.
    root = Path(tempfile.mkdtemp(prefix=f"tgs-override-{name[:64]}-")).resolve()
    try:
        for parameter, relative in relatives.items():
            target = Path(os.path.realpath(root / relative))
            if os.path.commonpath([root, target]) != str(root) or target == root:
                raise InvalidArgument(
                    f"Invalid file parameter '{clip(parameter)}' with normalized path "
                    f"'{clip(relative)}' must stay within model directory.")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(files[parameter])
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                raise InvalidArgument(
                    f"Invalid file parameter '{clip(parameter)}', directory has been created "
                    "as a file") from None
            except OSError as exc:
                raise InvalidArgument(
                    f"Invalid file parameter '{clip(parameter)}': {exc.strerror}") from None
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return root


def fingerprint(model_dir: Path) -> Optional[tuple]:
    """(path, mtime_ns, size) of every file and folder under ``model_dir``; None if unreadable."""
    rows = []
    try:
        for current, dirs, files in os.walk(model_dir, followlinks=True):
            dirs.sort()
            for entry in sorted(dirs) + sorted(files):
                path = os.path.join(current, entry)
                stat = os.stat(path)
                rows.append((os.path.relpath(path, model_dir), stat.st_mtime_ns, stat.st_size))
        stat = os.stat(model_dir)
        rows.append((".", stat.st_mtime_ns, 0))
    except OSError:
        return None
    return tuple(rows)


class ModelControl:
    """What loads when: start-up, the load/unload RPCs, and the poller."""

    def __init__(self, repository, settings=None):
        self.repository = repository
        self.mode = getattr(settings, "model_control_mode", "none") or "none"
        self.startup_models = list(getattr(settings, "load_model", None) or [])
        self.poll_secs = float(getattr(settings, "repository_poll_secs", 15.0) or 15.0)
        self.load_threads = max(1, int(getattr(settings, "model_load_thread_count", 4) or 1))
        self.max_file_bytes = int(getattr(settings, "model_load_max_file_bytes",
                                          DEFAULT_MAX_FILE_BYTES))
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._fingerprints: dict[str, Optional[tuple]] = {}
        self._override_dirs: dict[str, Path] = {}
        self._stop = threading.Event()
        self._poller: Optional[threading.Thread] = None

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

    # -- start-up and shutdown -------------------------------------------
    def load_startup_models(self) -> None:
        """Load the start-up models, ``--model-load-thread-count`` at a time."""
        names = self.repository.scan()
        if self.mode == "explicit" and "*" not in self.startup_models:
            names = list(dict.fromkeys(self.startup_models))

        def load(name: str) -> None:
            with self._lock(name):
                self._load_from_repository(name)

        if self.load_threads <= 1 or len(names) <= 1:
            for name in names:
                load(name)
            return
        from concurrent.futures import ThreadPoolExecutor

        from ..scheduler.ensemble import is_ensemble_dir

        # Ensembles check their steps at load: they load once the other models have.
        ensembles = [n for n in names if is_ensemble_dir(self.repository.root / n)]
        others = [n for n in names if n not in ensembles]
        with ThreadPoolExecutor(self.load_threads, thread_name_prefix="model-load") as pool:
            list(pool.map(load, others))
        for name in ensembles:
            load(name)

    def start(self) -> None:
        """Start the poller (poll mode only)."""
        if self.mode == "poll" and self._poller is None:
            self._poller = threading.Thread(target=self._poll_loop, daemon=True,
                                            name="repository-poll")
            self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=max(self.poll_secs, 1.0) + 30.0)
            self._poller = None
        for name in list(self._override_dirs):
            self._drop_override_dir(name)

    # -- RPCs -------------------------------------------------------------
    def load(self, name: str, parameters: Optional[dict] = None) -> None:
        """RepositoryModelLoad: load or reload ``name``; returns when done (or raises)."""
        if self.mode != "explicit":
            raise Unavailable(NOT_ALLOWED)
        validate_model_name(name)
        config, files = self._split_parameters(parameters or {})
        if len(name.encode()) > NAME_MAX:  # names no directory, in the repository or anywhere
            log.error("failed to poll model '%s': model not found in any model repository.",
                      clip(name))
            raise PollFailed(name)
        if files:
            self._check_file_bytes(name, files)
        with self._lock(name):
            override_dir = None
            if files:
                if config is None:
                    raise InvalidArgument(
                        "Load parameter 'config' must be specified for model file override")
                try:
                    model_dir = override_dir = write_override_directory(name, files)
                except OverlongFileName:
                    raise PollFailed(name) from None
            else:
                model_dir = self.repository.root / name
                try:
                    found = model_dir.is_dir()
                except OSError:
                    found = False
                if not found:
                    log.error("failed to poll model '%s': model not found in any model "
                              "repository.", clip(name))
                    raise PollFailed(name)
            if config is not None:
                try:
                    check_override_config(name, config)
                except PollFailed:
                    if override_dir is not None:
                        shutil.rmtree(override_dir, ignore_errors=True)
                    raise
            stamp = fingerprint(model_dir) if override_dir is None else None
            entry = self.repository.load(name, config, model_dir)
            installed = self.repository.entries().get(name) is entry
            if installed:
                self._drop_override_dir(name)
                if override_dir is not None:
                    self._override_dirs[name] = override_dir
                self._fingerprints[name] = stamp
            elif override_dir is not None:
                shutil.rmtree(override_dir, ignore_errors=True)
            # Judged while the lock is held: an unload queued behind this load would
            # otherwise turn the versions just loaded UNLOADING before they are read.
            self._raise_load_error(name, entry)

    def _check_file_bytes(self, name: str, files: dict[str, bytes]) -> None:
        total = sum(len(content) for content in files.values())
        if total > self.max_file_bytes:
            raise InvalidArgument(
                f"load of model '{clip(name)}' carries {total} bytes of file parameters, more "
                f"than the server's limit of {self.max_file_bytes} bytes "
                "(--model-load-max-file-bytes)")

    def unload(self, name: str, parameters: Optional[dict] = None) -> None:
        """RepositoryModelUnload: returns at once; versions close as their requests finish.

        ``unload_dependents`` is accepted (this server has no ensembles to follow).
        """
        if self.mode != "explicit":
            raise Unavailable(NOT_ALLOWED)
        with self._lock(name):
            entry = self.repository.unload(name)
            if entry is not None:
                self._fingerprints.pop(name, None)
                self._drop_override_dir(name)
                log.info("unloading '%s'", name)

    # -- helpers ----------------------------------------------------------
    @staticmethod
    def _split_parameters(parameters: dict) -> tuple[Optional[str], dict[str, bytes]]:
        config, files = None, {}
        for key, value in parameters.items():
            if key == "config" and isinstance(value, str):
                config = value
            elif key.startswith(FILE_PREFIX):
                if not isinstance(value, (bytes, bytearray, memoryview)):
                    raise InvalidArgument(
                        f"File parameter '{clip(key)}' must have bytes type for its value")
                files[key] = bytes(value)
            else:
                raise InvalidArgument(f"Unrecognized load parameter '{clip(key)}' with type "
                                      f"'{parameter_type(value)}'")
        return config, files

    def _load_from_repository(self, name: str):
        """Load ``name`` from its directory, remembering what the directory looked like."""
        self._fingerprints[name] = fingerprint(self.repository.root / name)
        self._drop_override_dir(name)
        return self.repository.load(name)

    def _drop_override_dir(self, name: str) -> None:
        # Backends read model files at load; the running versions keep no file open.
        directory = self._override_dirs.pop(name, None)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    @staticmethod
    def _raise_load_error(name: str, entry) -> None:
        """Triton's error for a load whose versions did not all become READY."""
        failed = [(n, v) for n, v in sorted(entry.versions.items()) if not v.ready]
        if entry.versions and not failed:
            return
        if not entry.versions:
            if entry.reason.startswith("at least one version must be available"):
                raise InternalError(f"failed to load '{name}', no version is available")
            prefix = f"load failed for model '{name}': "
            reason = entry.reason[len(prefix):] if entry.reason.startswith(prefix) else entry.reason
            raise InvalidArgument(f"{prefix}{reason}\n")
        reasons = "".join(f"version {n} is at {v.state} state: {v.reason};" for n, v in failed)
        raise InvalidArgument(f"load failed for model '{name}': {reasons}\n")

    # -- poll mode --------------------------------------------------------
    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_secs):
            try:
                self.poll_once()
            except Exception:  # keep polling whatever one pass hit
                log.exception("repository poll failed")

    def poll_once(self) -> None:
        """Load added and changed models, unload removed ones."""
        try:
            on_disk = self.repository.scan()
        except OSError as exc:
            log.error("failed to poll model repository '%s': %s", self.repository.root, exc)
            return
        for name in on_disk:
            if self._stop.is_set():
                return
            stamp = fingerprint(self.repository.root / name)
            if name in self._fingerprints and self._fingerprints[name] == stamp:
                continue
            with self._lock(name):
                log.info("poll: %s model '%s'",
                         "reloading" if name in self._fingerprints else "loading", name)
                self._load_from_repository(name)
        for name in set(self._fingerprints) - set(on_disk):
            with self._lock(name):
                log.info("poll: model '%s' removed, unloading", name)
                self._fingerprints.pop(name, None)
                self.repository.unload(name, forget=True)
