"""The soak's end reading (benchmarks/soak.py): it waits, within a bound, for threads that
an elastic pool lets go once idle, and still reports a thread that stays."""
from __future__ import annotations

import os
import sys
import threading

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import soak  # noqa: E402


def test_end_reading_waits_for_a_thread_that_ends():
    baseline = soak._proc(os.getpid())
    release = threading.Event()
    extra = threading.Thread(target=release.wait)
    extra.start()
    timer = threading.Timer(1.5, release.set)  # the extra thread ends 1.5 s from now
    timer.start()
    try:
        # The timer is a thread too; it is gone by the time the extra one ends.
        sample, waited = soak.settled_sample(os.getpid(), baseline, limit=20)
    finally:
        release.set()
        extra.join()
        timer.join()
    assert sample["threads"] <= baseline["threads"]
    assert 1.0 <= waited < 20


def test_end_reading_reports_a_thread_that_stays():
    baseline = soak._proc(os.getpid())
    release = threading.Event()
    extra = threading.Thread(target=release.wait)
    extra.start()
    try:
        sample, waited = soak.settled_sample(os.getpid(), baseline, limit=2)
    finally:
        release.set()
        extra.join()
    assert sample["threads"] == baseline["threads"] + 1
    assert waited >= 2
