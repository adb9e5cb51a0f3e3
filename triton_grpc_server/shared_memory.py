"""Client shared-memory regions: system (POSIX shm) and CUDA (IPC handles).

One manager per server holds every region a client registered, system and
CUDA alike, in one namespace, as Triton's ``SharedMemoryManager`` does; the
texts and status codes below are Triton's, since clients and Triton's QA
suite match on them.

System regions are ``shm_open`` + ``mmap`` of exactly the registered
``[offset, offset + byte_size)`` window of the client's object, bounds-checked
against the object's size at registration. Python's ``mmap`` is the mapping:
its buffer protocol gives zero-copy ``memoryview`` slices, which numpy reads
and which slice assignment fills with one ``memcpy`` (benchmarks/shm_bench.py
measures this path against ``memcpy`` itself), so there is no C layer here.

A request holds each region it uses (:meth:`SharedMemoryManager.acquire`)
until its response is complete; unregistering a held region only marks it,
and the last :meth:`SharedMemoryManager.release` unmaps it.
"""
from __future__ import annotations

import logging
import mmap
import os
import threading
from typing import Optional

from .errors import AlreadyExists, InternalError, InvalidArgument, NotFound, Unsupported

log = logging.getLogger(__name__)

SYSTEM = "system"
CUDA = "cuda"

# Keys Triton's Python backend uses for its own regions; clients may not register them.
RESERVED_KEY_PREFIX = "triton_python_backend_shm_region_"
CLIENT_SHM_DISABLED = ("Client shared memory is disabled. Start the server with "
                       "'--allow-client-shm=true' to enable.")
CUDA_IPC_HANDLE_BYTES = 64
# Triton keeps offsets and sizes in size_t; wire values wrap into it the same way.
SIZE_MAX = 2**64 - 1

try:  # CPython's own binding of shm_open (what multiprocessing.shared_memory uses)
    import _posixshmem
except ImportError:  # pragma: no cover - non-POSIX builds
    _posixshmem = None


class Region:
    """One registered region. ``buffer`` (system) is a writable memoryview of the
    mapped window; ``pointer`` (CUDA) is the device address opened from the handle."""

    __slots__ = ("name", "kind", "key", "offset", "byte_size", "device_id", "buffer",
                 "pointer", "raw_handle", "users", "awaiting_unregister", "_mapping", "_closer")

    def __init__(self, name: str, kind: str, *, key: str = "", offset: int = 0,
                 byte_size: int = 0, device_id: int = 0, mapping=None, pointer: int = 0,
                 raw_handle: bytes = b"", closer=None):
        self.name, self.kind, self.key = name, kind, key
        self.offset, self.byte_size, self.device_id = offset, byte_size, device_id
        self._mapping = mapping
        self.buffer = memoryview(mapping) if mapping is not None else None
        self.pointer, self.raw_handle = pointer, raw_handle
        self._closer = closer
        self.users = 0
        self.awaiting_unregister = False

    def close(self) -> None:
        try:
            if self.buffer is not None:
                self.buffer, buffer = None, self.buffer
                buffer.release()
            if self._mapping is not None:
                self._mapping.close()
        except BufferError:
            # A view handed out earlier still exists somewhere (a numpy array a
            # backend kept); the mapping goes when the last of them does.
            log.debug("shared memory region '%s' still viewed; unmapped when released",
                      self.name)
        self._mapping = None
        if self._closer is not None:
            closer, self._closer = self._closer, None
            closer(self.pointer)


def validate_key(name: str, key: str) -> None:
    stripped = key.lstrip("/")
    if not stripped:
        raise InvalidArgument(
            f"cannot register shared memory region '{name}' - invalid shm key '{key}'")
    if stripped.startswith(RESERVED_KEY_PREFIX):
        raise InvalidArgument(
            f"cannot register shared memory region '{name}' with key '{key}' as the key "
            f"contains the reserved prefix '{RESERVED_KEY_PREFIX}'")


def _open_shm(key: str) -> int:
    try:
        if _posixshmem is not None:
            return _posixshmem.shm_open(key, os.O_RDWR, 0o600)
        return os.open(os.path.join("/dev/shm", key.lstrip("/")), os.O_RDWR)  # pragma: no cover
    except (OSError, ValueError) as exc:
        log.debug("shm_open('%s') failed: %s", key, exc)
        raise InternalError(f"Unable to open shared memory region: '{key}'") from None


class SharedMemoryManager:
    """The server's registered regions (thread-safe)."""

    def __init__(self, allow_client_shm: bool = False, cuda=None):
        """``cuda``: the CUDA layer module (imported lazily when ``None``)."""
        self.allow_client_shm = allow_client_shm
        self._cuda = cuda
        self._lock = threading.Lock()
        self._regions: dict[str, Region] = {}

    def check_allowed(self) -> None:
        if not self.allow_client_shm:
            raise Unsupported(CLIENT_SHM_DISABLED)

    # -- registration ---------------------------------------------------------
    def register_system(self, name: str, key: str, offset: int, byte_size: int) -> None:
        self.check_allowed()
        validate_key(name, key)
        with self._lock:
            if name in self._regions:
                raise AlreadyExists(f"shared memory region '{name}' already in manager")
            fd = _open_shm(key)
            try:
                size = os.fstat(fd).st_size
                if offset + byte_size > size:
                    raise InvalidArgument(
                        f"failed to register shared memory region '{name}': invalid args")
                # mmap of length 0 fails in C (Triton reports it); Python's maps the rest.
                if byte_size == 0:
                    raise OSError(22, os.strerror(22))
                mapping = mmap.mmap(fd, byte_size, flags=mmap.MAP_SHARED,
                                    prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
            except OSError as exc:
                raise InvalidArgument(
                    f"failed to register shared memory region '{name}': unable to process "
                    f"address space{exc.strerror}") from None
            finally:
                os.close(fd)
            self._regions[name] = Region(name, SYSTEM, key=key, offset=offset,
                                         byte_size=byte_size, mapping=mapping)

    def register_cuda(self, name: str, raw_handle: bytes, device_id: int, byte_size: int) -> None:
        self.check_allowed()
        with self._lock:
            if name in self._regions:
                raise AlreadyExists(f"shared memory region '{name}' already in manager")
            cuda = self._cuda_layer()
            invalid = InvalidArgument("failed to register shared memory region: invalid args")
            if cuda is None or len(raw_handle) != CUDA_IPC_HANDLE_BYTES:
                raise invalid
            try:
                pointer = cuda.ipc_open_mem_handle(bytes(raw_handle), device_id)
            except Exception as exc:  # the handle doesn't open here: Triton's generic text
                log.error("failed to open CUDA IPC handle: %s", exc)
                raise invalid from None
            try:
                allocated = cuda.mem_address_range_size(pointer)
            except Exception as exc:
                log.error("%s", exc)
                allocated = -1
            if byte_size > allocated:
                cuda.ipc_close_mem_handle(pointer)
                raise InvalidArgument(
                    f"failed to register shared memory region '{name}': invalid args")
            self._regions[name] = Region(name, CUDA, byte_size=byte_size, device_id=device_id,
                                         pointer=pointer, raw_handle=bytes(raw_handle),
                                         closer=cuda.ipc_close_mem_handle)

    def cuda_available(self) -> bool:
        return self._cuda_layer() is not None

    def _cuda_layer(self):
        if self._cuda is None:
            try:
                from ._ext import cuda
            except ImportError:
                return None
            if cuda.unavailable_reason():
                self._cuda = False  # checked once: no driver or device here
                return None
            self._cuda = cuda
        if self._cuda is False:
            return None
        return self._cuda

    # -- status and unregistration --------------------------------------------
    def status(self, name: str, kind: str) -> list[Region]:
        """Regions of ``kind`` (all of them when ``name`` is empty), as Triton reports them."""
        with self._lock:
            if not name:
                return [r for r in self._regions.values() if r.kind == kind]
            region = self._regions.get(name)
            if region is None:
                raise NotFound(f"Unable to find {'cuda' if kind == CUDA else 'system'} shared "
                               f"memory region: '{name}'")
            if region.kind != kind:
                what = ("CUDA shared memory, not system shared memory" if region.kind == CUDA
                        else "system shared memory, not CUDA shared memory")
                raise NotFound(f"The region named '{name}' is registered as {what}")
            return [region]

    def unregister(self, name: str, kind: str) -> None:
        """Remove ``name`` (every region of ``kind`` when empty); unknown names are no error."""
        self.check_allowed()
        with self._lock:
            names = [name] if name else [n for n, r in self._regions.items() if r.kind == kind]
            for each in names:
                self._unregister_locked(each, kind)

    def _unregister_locked(self, name: str, kind: str) -> None:
        region = self._regions.get(name)
        if region is None or region.kind != kind:
            return
        if region.users:
            region.awaiting_unregister = True
            log.debug("Shared memory region '%s' will be unregistered after in-flight "
                      "requests complete.", name)
            return
        del self._regions[name]
        region.close()

    def close(self) -> None:
        """Unmap everything (server shutdown)."""
        with self._lock:
            regions, self._regions = list(self._regions.values()), {}
        for region in regions:
            region.close()

    # -- use by requests ------------------------------------------------------
    def acquire(self, name: str, offset: int, byte_size: int) -> Region:
        """Hold region ``name`` for a request after checking ``[offset, offset + byte_size)``
        lies inside it; :meth:`release` it when the request is done."""
        with self._lock:
            region = self._regions.get(name)
            if region is None:
                raise NotFound(f"Unable to find shared memory region: '{name}'")
            offset &= SIZE_MAX
            byte_size &= SIZE_MAX
            if offset >= region.byte_size:
                raise InvalidArgument(f"Invalid offset for shared memory region: '{name}'")
            if byte_size > SIZE_MAX - offset:
                raise InvalidArgument(
                    f"Integer overflow detected: byte_size ({byte_size}) + offset ({offset}) "
                    f"exceeds maximum value ({SIZE_MAX}) for region '{name}'")
            if offset + byte_size > region.byte_size:
                raise InvalidArgument(
                    f"Invalid offset + byte size for shared memory region: '{name}'")
            region.users += 1
            return region

    def release(self, region: Region) -> None:
        with self._lock:
            region.users -= 1
            if region.users == 0 and region.awaiting_unregister:
                if self._regions.get(region.name) is region:
                    del self._regions[region.name]
                region.close()

    def __len__(self) -> int:
        return len(self._regions)

    def get(self, name: str) -> Optional[Region]:
        return self._regions.get(name)
