"""Give freed heap pages back to the operating system after a very large message.

grpcio assembles a received message from many small slices allocated with
malloc; once a large message is done with, those chunks are free but glibc
keeps the pages (a few live chunks above them pin the heap), so one rejected
1.5 GB request would leave the process hundreds of MB larger for good.
``malloc_trim(0)`` returns every whole free page (glibc only; a no-op elsewhere).
"""
from __future__ import annotations

import ctypes

# Messages at least this large trigger a trim when their RPC ends; trimming costs a
# walk of the heap (milliseconds), negligible next to receiving that many bytes.
TRIM_AFTER_BYTES = 64 << 20

_trim = None


def release_freed_memory() -> None:
    global _trim
    if _trim is None:
        try:
            _trim = ctypes.CDLL(None).malloc_trim
            _trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):  # not glibc
            _trim = False
    if _trim:
        _trim(0)
