"""The idle trimmer: one malloc_trim after each burst of CPU work, one per BUSY_TRIM_CHECKS
periods of steady work, none while idle."""
from __future__ import annotations

import threading

import pytest

from triton_grpc_server import heap


def run_trimmer(monkeypatch, cpu_times: list[float]) -> int:
    """Feed the trimmer these process CPU times, one per reading; return how often it trimmed."""
    stop = threading.Event()
    readings = iter(cpu_times)
    trims = []

    def process_time() -> float:
        try:
            return next(readings)
        except StopIteration:
            stop.set()
            return cpu_times[-1] + 1.0  # a busy reading: the trimmer stops without acting on it

    monkeypatch.setattr(heap, "_trim", lambda pad: trims.append(pad))
    monkeypatch.setattr(heap.time, "process_time", process_time)
    monkeypatch.setattr(heap, "IDLE_CHECK_S", 0.0)
    thread = heap.start_idle_trimmer(stop)
    thread.join(10)
    assert not thread.is_alive()
    return len(trims)


@pytest.mark.parametrize("cpu_times, expected", [
    ([0.0, 1.0, 1.01, 1.02, 1.03, 1.04], 1),        # a busy second, then idle: one trim
    ([0.0, 0.01, 0.02, 0.03], 0),                   # idle from the start: nothing to give back
    ([0.0, 1.0, 2.0, 3.0, 4.0], 0),                 # busy, but not for BUSY_TRIM_CHECKS periods
    ([float(i) for i in range(40)], 1),             # busy for 39 periods: one trim after 30
    ([float(i) for i in range(62)], 2),             # ... and one more after 60
    ([0.0, 1.0, 1.01, 1.02, 2.0, 2.01, 2.02], 2),   # two bursts: one trim after each
])
def test_trims_once_after_each_burst(monkeypatch, cpu_times, expected):
    assert run_trimmer(monkeypatch, cpu_times) == expected
