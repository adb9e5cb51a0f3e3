"""Give freed heap pages back to the operating system: after a very large message,
once the server goes idle after a burst of work, and every half minute of steady work.

glibc keeps freed memory for reuse. Most of it is cheap to keep, but two cases are not:

* grpcio assembles a received message from many small slices allocated with malloc;
  once a large message is done with, those chunks are free but glibc keeps the pages
  (a few live chunks above them pin the heap), so one rejected 1.5 GB request would
  leave the process hundreds of MB larger for good.
* 4 MiB tensors: glibc's mmap threshold starts at 128 KiB and raises itself to the
  size of every mapped block freed, so after the first 4 MiB buffers are freed later
  ones are carved from the heaps of whichever thread arenas handled them, and RSS
  moves in ~10 MiB steps. Fixing the threshold at 1 MiB (``mallopt``) keeps RSS flat
  but costs a fresh mapping, and its page faults, for every buffer: measured +60%
  CPU per 4 MiB inference. Trimming once the process is idle keeps the fast reuse
  under load and hands the free pages back afterwards.

``malloc_trim(0)`` returns every whole free page of every arena (glibc only; a no-op
elsewhere). It walks the heaps (milliseconds), so it runs only when the work is over.
"""
from __future__ import annotations

import ctypes
import threading
import time

# Messages at least this large trigger a trim when their RPC ends; trimming costs a
# walk of the heap (milliseconds), negligible next to receiving that many bytes.
TRIM_AFTER_BYTES = 64 << 20

# The idle trimmer looks at the process's CPU time every IDLE_CHECK_S: it trims once a
# period used less than IDLE_CPU_S after at least BUSY_CPU_S of CPU since the last trim.
# Reading CPU time costs nothing on the request path.
IDLE_CHECK_S = 1.0
IDLE_CPU_S = 0.05
BUSY_CPU_S = 0.5
# A server that never goes idle trims every BUSY_TRIM_CHECKS periods instead (30 s): under
# steady 4 MiB traffic free pages otherwise pile up in the arenas for as long as the load
# lasts. One trim (milliseconds, and the page faults of re-growing what the load needs) per
# half minute is noise next to the work that filled the heap.
BUSY_TRIM_CHECKS = 30

_trim = None


def _malloc_trim():
    global _trim
    if _trim is None:
        try:
            _trim = ctypes.CDLL(None).malloc_trim
            _trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):  # not glibc
            _trim = False
    return _trim


def release_freed_memory() -> None:
    trim = _malloc_trim()
    if trim:
        trim(0)


def start_idle_trimmer(stop: threading.Event) -> threading.Thread | None:
    """Trim after each burst of work, once the process is idle, until ``stop`` is set."""
    if not _malloc_trim():
        return None

    def watch() -> None:
        last_trim = last = time.process_time()
        checks = 0  # periods since the last trim
        while not stop.wait(IDLE_CHECK_S):
            now = time.process_time()
            checks += 1
            busy_since_trim = last - last_trim >= BUSY_CPU_S
            went_idle = now - last < IDLE_CPU_S
            if busy_since_trim and (went_idle or checks >= BUSY_TRIM_CHECKS):
                release_freed_memory()
                now = time.process_time()
                last_trim = now
                checks = 0
            last = now

    thread = threading.Thread(target=watch, name="heap-idle-trim", daemon=True)
    thread.start()
    return thread
