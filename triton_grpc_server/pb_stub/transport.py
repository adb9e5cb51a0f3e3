"""Tensors between the server and an instance process, through shared memory.

Each side owns a :class:`SharedPool`: memfd segments (anonymous shared memory,
freed by the kernel when both processes drop them, so a crash leaves nothing
in ``/dev/shm``) from which it carves blocks. A tensor crosses by being
copied once into a block of the sender's pool; the receiver maps the segment
(its file descriptor travels over the control socket once) and wraps the block
in a numpy array without copying. A tensor that already lies in a block the
receiver owns (an identity model returning its input) is sent as a reference
to that block and not copied at all.

Blocks are freed by reference counting across the two processes: the
receiver's array carries a finalizer that queues a release; queued releases
ride on the next control message back (or a flusher sends them when no
message goes). Tiny tensors travel inline in the control message instead:
mapping, releasing and freeing a block costs more than copying a few bytes.
"""
from __future__ import annotations

import bisect
import mmap
import os
import queue
import struct
import threading
import weakref
from typing import Optional

import numpy as np

ALIGN = 64
SEGMENT_BYTES = 1 << 20  # the first segment; later ones grow with demand
INLINE_MAX = 1024  # bytes below which a tensor travels in the control message

# Descriptor tags: where a tensor's bytes are.
INLINE = "i"   # ("i", bytes)
SENDER = "s"   # ("s", segment, offset, nbytes): a block of the sender's pool
RECEIVER = "r"  # ("r", segment, offset, nbytes): a block of the receiver's own pool

# wire datatype <-> numpy dtype (BF16 travels as its raw uint16 halves)
DTYPES = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"), "BYTES": np.dtype(object),
}
_WIRE_OF = {dtype: name for name, dtype in DTYPES.items() if name not in ("BF16", "BYTES")}


def wire_datatype(dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    if dtype.byteorder == ">":
        dtype = dtype.newbyteorder("<")
    try:
        return _WIRE_OF[dtype]
    except KeyError:
        raise TypeError(f"unsupported numpy datatype {dtype}") from None


_LEN = struct.Struct("<I")


def pack_bytes(array) -> bytes:
    """An array of bytes/str in Triton's BYTES layout (4-byte LE lengths), C order."""
    parts = []
    for item in np.asarray(array, dtype=object).ravel(order="C"):
        if isinstance(item, str):
            item = item.encode("utf-8")
        elif not isinstance(item, (bytes, bytearray, memoryview)):
            item = str(item).encode("utf-8")
        parts.append(_LEN.pack(len(item)))
        parts.append(bytes(item))
    return b"".join(parts)


def unpack_bytes(buffer, shape) -> np.ndarray:
    """Triton's BYTES layout -> object array of ``bytes`` with ``shape``."""
    view = memoryview(buffer).cast("B")
    items, offset, end = [], 0, len(view)
    while offset < end:
        (length,) = _LEN.unpack_from(view, offset)
        offset += 4
        items.append(bytes(view[offset:offset + length]))
        offset += length
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


class _Segment:
    __slots__ = ("id", "fd", "size", "map", "address", "free", "used", "lock")

    def __init__(self, segment_id: int, size: int, fd: int):
        self.id, self.fd, self.size = segment_id, fd, size
        self.map = mmap.mmap(fd, size)
        self.address = np.frombuffer(self.map, dtype=np.uint8, count=1).ctypes.data
        self.free = [(0, size)]  # sorted (offset, size) extents
        self.used: dict[int, list] = {}  # offset -> [size, refcount]


class SharedPool:
    """The blocks this process hands to its peer; only this process allocates."""

    def __init__(self, label: str, segment_bytes: int = SEGMENT_BYTES):
        self.label = label
        self.segment_bytes = segment_bytes
        self.segments: dict[int, _Segment] = {}
        self._lock = threading.Lock()
        self._announce: list[tuple[int, int, int]] = []  # (id, fd, size) the peer hasn't seen
        self._next_id = 0

    def _grow(self, nbytes: int) -> _Segment:
        total = sum(s.size for s in self.segments.values())
        size = max(self.segment_bytes, total, -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE)
        fd = os.memfd_create(f"tgs-{self.label}-{self._next_id}", os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        segment = _Segment(self._next_id, size, fd)
        self._next_id += 1
        self.segments[segment.id] = segment
        self._announce.append((segment.id, fd, size))
        return segment

    def alloc(self, nbytes: int) -> tuple[_Segment, int]:
        """A block of at least ``nbytes`` with one reference (the peer's)."""
        need = max(ALIGN, -(-nbytes // ALIGN) * ALIGN)
        with self._lock:
            for segment in self.segments.values():
                for index, (offset, size) in enumerate(segment.free):
                    if size >= need:
                        if size == need:
                            del segment.free[index]
                        else:
                            segment.free[index] = (offset + need, size - need)
                        segment.used[offset] = [need, 1]
                        return segment, offset
            segment = self._grow(need)
            offset, size = segment.free[0]
            segment.free[0] = (need, size - need)
            if size == need:
                segment.free.pop(0)
            segment.used[offset] = [need, 1]
            return segment, offset

    def retain(self, segment_id: int, offset: int) -> Optional[tuple[_Segment, int]]:
        """One more reference to the block holding ``offset``; (segment, block start)."""
        with self._lock:
            segment = self.segments.get(segment_id)
            if segment is None:
                return None
            for start, block in segment.used.items():
                if start <= offset < start + block[0]:
                    block[1] += 1
                    return segment, start
            return None

    def release(self, segment_id: int, offset: int) -> None:
        with self._lock:
            segment = self.segments.get(segment_id)
            if segment is None:
                return
            block = segment.used.get(offset)
            if block is None:
                return
            block[1] -= 1
            if block[1] > 0:
                return
            del segment.used[offset]
            size = block[0]
            free = segment.free
            index = bisect.bisect_left(free, (offset, 0))
            if index < len(free) and offset + size == free[index][0]:
                size += free.pop(index)[1]
            if index > 0 and free[index - 1][0] + free[index - 1][1] == offset:
                previous = free[index - 1]
                free[index - 1] = (previous[0], previous[1] + size)
            else:
                free.insert(index, (offset, size))

    def take_announcements(self) -> list[tuple[int, int, int]]:
        with self._lock:
            pending, self._announce = self._announce, []
        return pending

    def close(self) -> None:
        with self._lock:
            segments, self.segments = list(self.segments.values()), {}
        for segment in segments:
            try:
                segment.map.close()
            except BufferError:  # a view still exists; the kernel frees it with the process
                pass
            os.close(segment.fd)


class PeerSegments:
    """The peer's segments, mapped here; arrays over them release on collection."""

    def __init__(self, releases: "queue.SimpleQueue"):
        self.maps: dict[int, tuple[mmap.mmap, int, int]] = {}  # id -> (map, address, size)
        self.releases = releases

    def add(self, segment_id: int, fd: int, size: int) -> None:
        mapped = mmap.mmap(fd, size)
        os.close(fd)
        address = np.frombuffer(mapped, dtype=np.uint8, count=1).ctypes.data
        self.maps[segment_id] = (mapped, address, size)

    def locate(self, array: np.ndarray) -> Optional[tuple[int, int]]:
        address = array.ctypes.data
        for segment_id, (_, base, size) in self.maps.items():
            if base <= address < base + size:
                return segment_id, address - base
        return None

    def view(self, segment_id: int, offset: int, nbytes: int) -> np.ndarray:
        mapped = self.maps[segment_id][0]
        array = np.frombuffer(mapped, dtype=np.uint8, count=nbytes, offset=offset)
        # SimpleQueue.put is safe from a finalizer running at any point.
        weakref.finalize(array, self.releases.put, (segment_id, offset))
        return array

    def close(self) -> None:
        for mapped, _, _ in self.maps.values():
            try:
                mapped.close()
            except BufferError:
                pass
        self.maps.clear()


class Transport:
    """Both pools of one side, and the tensor descriptors built over them."""

    def __init__(self, label: str):
        self.releases: "queue.SimpleQueue" = queue.SimpleQueue()
        self.own = SharedPool(label)
        self.peer = PeerSegments(self.releases)

    # -- sending --------------------------------------------------------
    def encode(self, array, datatype: Optional[str] = None) -> tuple:
        """(datatype, shape, location) for an array, copied into shared memory at most once."""
        array = np.asarray(array) if not isinstance(array, np.ndarray) else array
        if datatype is None:
            datatype = wire_datatype(array.dtype)
        shape = tuple(array.shape)
        if datatype == "BYTES":
            data = pack_bytes(array)
            return datatype, shape, self._place_bytes(data)
        dtype = DTYPES[datatype]
        if array.dtype != dtype:
            array = array.astype(dtype)
        nbytes = array.nbytes
        if nbytes <= INLINE_MAX:
            return datatype, shape, (INLINE, array.tobytes())
        if array.flags.c_contiguous:
            found = self.peer.locate(array)
            if found is not None:  # already in the receiver's memory: no copy
                return datatype, shape, (RECEIVER, found[0], found[1], nbytes)
        segment, offset = self.own.alloc(nbytes)
        target = np.frombuffer(segment.map, dtype=dtype, count=array.size, offset=offset)
        target.reshape(shape)[...] = array
        return datatype, shape, (SENDER, segment.id, offset, nbytes)

    def encode_raw(self, data) -> tuple:
        """A location for already-serialized bytes (BYTES tensors, raw buffers)."""
        return self._place_bytes(data)

    def _place_bytes(self, data) -> tuple:
        nbytes = len(data)
        if nbytes <= INLINE_MAX:
            return (INLINE, bytes(data))
        segment, offset = self.own.alloc(nbytes)
        segment.map[offset:offset + nbytes] = data
        return (SENDER, segment.id, offset, nbytes)

    # -- receiving ------------------------------------------------------
    def buffer(self, location) -> "np.ndarray | bytes":
        """The bytes behind a location, without copying where shared memory holds them."""
        tag = location[0]
        if tag == INLINE:
            return location[1]
        _, segment_id, offset, nbytes = location
        if tag == SENDER:
            return self.peer.view(segment_id, offset, nbytes)
        found = self.own.retain(segment_id, offset)
        if found is None:
            raise ValueError(f"block {segment_id}:{offset} is not allocated")
        segment, start = found
        array = np.frombuffer(segment.map, dtype=np.uint8, count=nbytes, offset=offset)
        weakref.finalize(array, self.releases.put, ("own", segment_id, start))
        return array

    def decode(self, datatype: str, shape, location) -> np.ndarray:
        raw = self.buffer(location)
        if datatype == "BYTES":
            return unpack_bytes(raw, shape)
        dtype = DTYPES[datatype]
        if isinstance(raw, bytes):
            return np.frombuffer(raw, dtype=dtype).reshape(shape)
        return raw.view(dtype).reshape(shape)

    # -- releases -------------------------------------------------------
    def drain_releases(self) -> list:
        """Releases owed to the peer; own-pool references are dropped here directly."""
        out = []
        releases = self.releases
        while True:
            try:
                item = releases.get_nowait()
            except queue.Empty:
                return out
            if item[0] == "own":
                self.own.release(item[1], item[2])
            else:
                out.append(item)

    def apply_releases(self, blocks) -> None:
        for segment_id, offset in blocks:
            self.own.release(segment_id, offset)

    def close(self) -> None:
        self.peer.close()
        self.own.close()
