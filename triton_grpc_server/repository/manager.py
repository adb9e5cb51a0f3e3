"""Which models and versions are loaded, and their states.

A model's config is read and completed once per load; each selected version
loads its backend and instances. A model whose config or file is broken is
UNAVAILABLE with its reason while the others serve.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Optional

from .._ext.wire import InputSpecs
from .._proto import model_config_pb2 as mc
from ..backends.base import BackendContext
from ..errors import InvalidArgument, NotFound, TritonError, Unavailable
from ..scheduler import Scheduler, create_scheduler
from ..stats import ModelStats
from ..tensors import NUMPY_DTYPES
from . import config as cfg
from .layout import available_versions, model_names, select_versions
from .paths import confined_path

log = logging.getLogger(__name__)

READY, UNAVAILABLE, LOADING, UNLOADING = "READY", "UNAVAILABLE", "LOADING", "UNLOADING"
# Instances one model may ask for, all groups and devices together (--model-max-instance-count).
DEFAULT_MAX_INSTANCE_COUNT = 64


def model_files(model_dir: Path, config, on_disk: list[int]) -> list[Path]:
    """The model files of the versions the config's policy selects, oldest first."""
    paths = []
    for version in select_versions(config.version_policy, on_disk):
        path = model_file_path(model_dir, version, config)
        if path.exists():
            paths.append(path)
    return paths


def model_file_path(model_dir: Path, version: int, config) -> Path:
    """``<model_dir>/<version>/<default_model_filename>``, confined to the model directory;
    the version folder itself for a backend without a model file (an ensemble)."""
    if not config.default_model_filename:
        return Path(model_dir) / str(int(version))
    return confined_path(model_dir, config.default_model_filename, "default_model_filename",
                         config.name, base=str(version))


_STOL_PREFIX = re.compile(r"\s*([+-]?\d+)")
_INT64_MAX = 2**63 - 1


def parse_version(text: str) -> int:
    """A request's version string, read as Triton reads it (``std::stol``).

    "" is -1 (the newest ready version); leading blanks are skipped and the
    leading integer is taken ("1.5" is 1); no digits, or a value beyond int64,
    is INVALID_ARG; a negative value is refused.
    """
    if text == "":
        return -1
    match = _STOL_PREFIX.match(text)
    number = int(match.group(1)) if match else None
    if number is None or not -_INT64_MAX - 1 <= number <= _INT64_MAX:
        raise InvalidArgument(
            f"failed to get model version from specified version string '{text}' (details: "
            f"stol), version should be an integral value > 0")
    if number < 0:
        raise InvalidArgument(
            f"invalid model version specified '{text}' , version should be an integral value > 0")
    return number


class ModelVersion:
    """One loaded version of a model: its config, backend, instances and scheduler."""

    def __init__(self, name: str, version: int, config, model_dir: Path):
        self.name = name
        self.version = version
        self.config = config
        self.model_dir = model_dir
        self.state = LOADING
        self.reason = ""
        self.backend = None
        self.scheduler: Optional[Scheduler] = None
        self.stats = ModelStats()
        self.inputs = {t.name: t for t in config.input}
        self.outputs = {t.name: t for t in config.output}
        self.labels: dict[str, list[str]] = {}
        self.load_duration_s: Optional[float] = None  # nv_model_load_duration_secs
        # In-flight requests (acquire/release): a retired version closes when idle.
        self._inflight = 0
        self._idle = threading.Condition()
        self._released = False

    @property
    def ready(self) -> bool:
        return self.state == READY

    def load(self, backend_class, context: BackendContext) -> None:
        model_path = model_file_path(self.model_dir, self.version, self.config)
        if not model_path.exists():
            raise Unavailable(f"unable to find '{model_path}' for model '{self.name}'")
        self.labels = cfg.labels_for(self.config, self.model_dir)
        self.backend = backend_class(self.config, self.version, model_path, context)
        instances = []
        try:
            for group in self.config.instance_group:
                kind = mc.ModelInstanceGroup.Kind.Name(group.kind)
                devices = list(group.gpus) or [0]
                for index in range(group.count):
                    for device in (devices if kind == "KIND_GPU" else [0]):
                        instances.append(self.backend.create_instance(len(instances), kind, device))
        except BaseException:
            for instance in instances:
                instance.close()
            raise
        self.scheduler = create_scheduler(self.config, instances, self.stats, context)
        self._read_request_facts()
        self.state = READY

    def _read_request_facts(self) -> None:
        """What every request checks, read once as plain Python values: protobuf field
        access and enum-name lookups cost microseconds per request. Done at load, when
        the config has been validated, so every tensor has a wire datatype."""
        config = self.config
        self.max_batch_size = config.max_batch_size
        self.decoupled = config.model_transaction_policy.decoupled
        self.input_count = len(config.input)
        self.required_inputs = [t.name for t in config.input if not t.optional]
        # name -> (wire datatype, dims list, has reshape)
        self.input_specs = {t.name: (cfg.wire_datatype(t), list(t.dims), t.HasField("reshape"))
                            for t in config.input}
        # name -> (wire datatype, has reshape)
        self.output_specs = {t.name: (cfg.wire_datatype(t), t.HasField("reshape"))
                             for t in config.output}
        # The Cython validator's view: the inputs it may serve alone (fixed-size, no reshape).
        fast = {name: (datatype, tuple(dims), NUMPY_DTYPES[datatype])
                for name, (datatype, dims, reshaped) in self.input_specs.items()
                if not reshaped and datatype != "BYTES"}
        self.raw_input_specs = InputSpecs(self.max_batch_size, self.input_count, fast,
                                          list(self.outputs))

    def acquire(self) -> bool:
        """Count a request in; False once the version is no longer READY."""
        with self._idle:
            if self.state != READY:
                return False
            self._inflight += 1
            return True

    def release(self) -> None:
        with self._idle:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.notify_all()

    def retire(self, wait: bool = False) -> None:
        """Stop taking requests; close the instances once the in-flight ones finish.

        Asynchronous unless ``wait``: a background thread waits for idle.
        """
        with self._idle:
            if self.state != READY:
                return
            self.state = UNLOADING
        if wait:
            self._close_when_idle()
        else:
            threading.Thread(target=self._close_when_idle, daemon=True,
                             name=f"unload-{self.name}-{self.version}").start()

    def _close_when_idle(self) -> None:
        with self._idle:
            while self._inflight > 0:
                self._idle.wait()
        self.unload()
        log.info("successfully unloaded '%s' version %d", self.name, self.version)

    def unload(self) -> None:
        """Release the scheduler and backend now (idempotent); the version ends UNAVAILABLE."""
        with self._idle:
            if self._released:
                return
            self._released = True
            was_loaded = self.state in (READY, UNLOADING)
            if was_loaded:
                self.state = UNLOADING
        try:
            if self.scheduler is not None:
                self.scheduler.close()
            if self.backend is not None:
                self.backend.unload()
        finally:
            self.scheduler = self.backend = None
            if was_loaded:
                self.state, self.reason = UNAVAILABLE, "unloaded"


class ModelEntry:
    """A model known to the repository, with its versions or the reason it has none."""

    def __init__(self, name: str):
        self.name = name
        self.config = None
        self.versions: dict[int, ModelVersion] = {}
        self.state = ""
        self.reason = ""

    def latest_ready(self) -> Optional[ModelVersion]:
        if len(self.versions) == 1:  # most models: no sort per request
            (only,) = self.versions.values()
            return only if only.ready else None
        for version in sorted(self.versions, reverse=True):
            if self.versions[version].ready:
                return self.versions[version]
        return None


class ModelRepository:
    def __init__(self, root: Path, auto_complete: bool = True, settings=None):
        self.root = Path(root)
        self.auto_complete = auto_complete
        self.settings = settings
        self.config_name = getattr(settings, "model_config_name", "") or ""
        self.load_retries = max(0, int(getattr(settings, "model_load_retry_count", 0) or 0))
        if settings is not None and hasattr(settings, "backend_config"):
            from ..backends import configure_backends

            configure_backends(settings)
        self._models: dict[str, ModelEntry] = {}
        self._lock = threading.RLock()

    # -- lifecycle -------------------------------------------------------
    def scan(self) -> list[str]:
        from ..scheduler.ensemble import is_ensemble_dir

        # Ensembles last, after the models their steps use (Triton loads dependencies first).
        return sorted(model_names(self.root), key=lambda n: is_ensemble_dir(self.root / n))

    def load_all(self) -> None:
        for name in self.scan():
            self.load(name)

    def load(self, name: str, config_override: Optional[str] = None,
             model_dir: Optional[Path] = None) -> ModelEntry:
        """Load (or reload) a model's selected versions; failures become states, not exceptions.

        Loading happens outside the repository lock, so inference on every
        model (this one included) goes on meanwhile. The new versions then
        replace the old ones in one step: requests already running finish on
        the version they started on, each old version closing when idle. A
        reload in which no version loads keeps the old versions serving.
        Returns the entry just built (installed or not).
        """
        model_dir = Path(model_dir) if model_dir is not None else self.root / name
        with self._lock:
            if name not in self._models:  # a first load shows as LOADING meanwhile
                placeholder = ModelEntry(name)
                placeholder.state = LOADING
                self._models[name] = placeholder
        entry = self._build(name, model_dir, config_override)
        with self._lock:
            old = self._models.get(name)
            keep_old = (old is not None and old.latest_ready() is not None
                        and entry.latest_ready() is None)
            if not keep_old:
                self._models[name] = entry
        if keep_old:
            log.error("failed to reload '%s'; the loaded versions keep serving", name)
            for version in entry.versions.values():
                version.unload()
        elif old is not None:
            for version in old.versions.values():
                version.retire()
        return entry

    def _build(self, name: str, model_dir: Path, config_override: Optional[str]) -> ModelEntry:
        entry = ModelEntry(name)
        entry.state = LOADING
        try:
            config = cfg.read_config(model_dir, config_override, self.config_name)
            on_disk = available_versions(model_dir)
            try:
                config, backend_class = cfg.complete_config(
                    config, name, model_dir, lambda c: model_files(model_dir, c, on_disk),
                    self.auto_complete)
            except cfg.AutoCompleteFailed as exc:
                return self._failed_versions(entry, exc, model_dir, on_disk)
            self._check_instance_count(config)
            selected = select_versions(config.version_policy, on_disk)
            if not selected:
                raise InvalidArgument(f"at least one version must be available under the version "
                                      f"policy of model '{name}'")
            entry.config = config
            context = BackendContext(name, self.settings)
            context.model_dir, context.repository = model_dir, self  # sequence state, ensembles
            for version in selected:
                for attempt in range(self.load_retries + 1):  # --model-load-retry-count
                    model_version = ModelVersion(name, version, config, model_dir)
                    entry.versions[version] = model_version
                    started = time.monotonic()
                    try:
                        model_version.load(backend_class, context)
                        model_version.load_duration_s = time.monotonic() - started
                        log.info("successfully loaded '%s' version %d in %.3fs", name, version,
                                 model_version.load_duration_s)
                    except TritonError as exc:
                        model_version.state, model_version.reason = UNAVAILABLE, exc.message
                    except Exception as exc:  # a backend's own exception: report, keep serving
                        model_version.state, model_version.reason = UNAVAILABLE, f"{type(exc).__name__}: {exc}"
                    if model_version.state == READY or attempt == self.load_retries:
                        break
                    log.warning("loading '%s' version %d failed (%s); retrying (%d of %d)",
                                name, version, model_version.reason, attempt + 1,
                                self.load_retries)
                if model_version.state != READY:
                    log.error("failed to load '%s' version %d: %s", name, version, model_version.reason)
            ready = any(v.ready for v in entry.versions.values())
            entry.state = READY if ready else UNAVAILABLE
            if not ready:
                entry.reason = "; ".join(v.reason for v in entry.versions.values() if v.reason)
        except TritonError as exc:
            entry.state, entry.reason = UNAVAILABLE, exc.message
            log.error("failed to load '%s': %s", name, exc.message)
        except Exception as exc:
            entry.state, entry.reason = UNAVAILABLE, f"{type(exc).__name__}: {exc}"
            log.error("failed to load '%s': %s", name, entry.reason)
        return entry

    def _check_instance_count(self, config) -> None:
        """Refuse a config asking for more instances than the server allows (a config
        override can ask for millions, each a thread and a copy of the model)."""
        limit = getattr(self.settings, "model_max_instance_count", DEFAULT_MAX_INSTANCE_COUNT)
        total = 0
        for group in config.instance_group:
            devices = len(group.gpus) if group.kind == mc.ModelInstanceGroup.KIND_GPU else 1
            total += group.count * max(devices, 1)
        if total > limit:
            raise InvalidArgument(
                f"instance_group of model '{config.name}' asks for {total} instances, more "
                f"than the server's limit of {limit} (--model-max-instance-count)")

    @staticmethod
    def _failed_versions(entry: ModelEntry, exc: "cfg.AutoCompleteFailed", model_dir: Path,
                         on_disk: list[int]) -> ModelEntry:
        for number in select_versions(exc.config.version_policy, on_disk):
            version = ModelVersion(entry.name, number, exc.config, model_dir)
            version.state, version.reason = UNAVAILABLE, exc.message
            entry.versions[number] = version
        entry.state, entry.reason = UNAVAILABLE, exc.message
        log.error("failed to load '%s': %s", entry.name, exc.message)
        return entry

    def unload(self, name: str, forget: bool = False) -> Optional[ModelEntry]:
        """Stop serving a model at once; each version closes when its requests finish.

        The entry stays listed (UNAVAILABLE, "unloaded") unless ``forget``.
        """
        with self._lock:
            entry = self._models.pop(name, None) if forget else self._models.get(name)
            if entry is not None:
                entry.state, entry.reason = UNAVAILABLE, "unloaded"
        if entry is not None:
            for version in entry.versions.values():
                version.retire()
        return entry

    def close(self) -> None:
        with self._lock:
            entries = list(self._models.values())
            self._models.clear()
        for entry in entries:
            for version in entry.versions.values():
                version.unload()

    # -- queries ---------------------------------------------------------
    def entries(self) -> dict[str, ModelEntry]:
        with self._lock:
            return dict(self._models)

    def all_ready(self) -> bool:
        # Unloaded models and first loads still in progress do not count (as Triton).
        return all(e.state == READY for e in self.entries().values()
                   if e.reason != "unloaded" and e.state != LOADING)

    def get(self, name: str, version: str = "") -> ModelVersion:
        """The version a request names ("" = newest ready), or Triton's error for it."""
        number = parse_version(version)
        entry = self._models.get(name)
        if entry is None:
            raise NotFound(f"Request for unknown model: '{name}' is not found")
        if number == -1:
            found = entry.latest_ready()
            if found is None:
                raise NotFound(f"Request for unknown model: '{name}' has no available versions")
            return found
        found = entry.versions.get(number)
        if found is None:
            raise NotFound(f"Request for unknown model: '{name}' version {number} is not found")
        if not found.ready:
            raise Unavailable(
                f"Request for unknown model: '{name}' version {number} is not at ready state")
        return found

    def acquire(self, name: str, version: str = "") -> ModelVersion:
        """:meth:`get`, counted in flight until ``release()``; a version swapped out
        between the two steps is looked up again, so a reload fails no request."""
        while True:
            model = self.get(name, version)
            if model.acquire():
                return model

    def is_ready(self, name: str, version: str = "") -> bool:
        """ModelReady: false for unknown models and versions; a malformed version is an error."""
        parse_version(version)
        try:
            return self.get(name, version).ready
        except (NotFound, Unavailable):
            return False

    def index(self, ready_only: bool = False) -> list[tuple[str, str, str, str]]:
        """(name, version, state, reason) rows as RepositoryIndex reports them."""
        rows = []
        entries = self.entries()
        for name in sorted(set(self.scan()) | set(entries)):
            entry = entries.get(name)
            if entry is None:
                if not ready_only:
                    rows.append((name, "", "", ""))
                continue
            if not entry.versions:
                if not ready_only or entry.state == READY:
                    rows.append((name, "", entry.state, entry.reason))
                continue
            for number, version in sorted(entry.versions.items()):
                if ready_only and not version.ready:
                    continue
                rows.append((name, str(number), version.state, version.reason))
        return rows
