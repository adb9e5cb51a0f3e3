"""The soak's end reading (benchmarks/soak.py): it waits, within a bound, for threads that
an elastic pool lets go once idle, and still reports a thread that stays.

Read on a child process whose threads the test controls (the test process's own count
moves with whatever earlier tests left running down)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import soak  # noqa: E402

CHILD = textwrap.dedent("""
    import sys, threading, time
    print("baseline", flush=True)
    sys.stdin.readline()
    # One thread more, for the given number of seconds.
    threading.Thread(target=time.sleep, args=(float(sys.argv[1]),)).start()
    print("extra", flush=True)
    time.sleep(120)
""")


@pytest.fixture
def child_with_extra_thread():
    children = []

    def start(lives_s: float):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(lives_s)], text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        children.append(child)
        assert child.stdout.readline().strip() == "baseline"
        baseline = soak._proc(child.pid)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "extra"
        assert soak._proc(child.pid)["threads"] == baseline["threads"] + 1
        return child, baseline

    yield start
    for child in children:
        child.kill()
        child.wait()


def test_end_reading_waits_for_a_thread_that_ends(child_with_extra_thread):
    child, baseline = child_with_extra_thread(1.5)
    sample, waited = soak.settled_sample(child.pid, baseline, limit=20)
    assert sample["threads"] == baseline["threads"]
    assert 0.5 <= waited < 20


def test_end_reading_reports_a_thread_that_stays(child_with_extra_thread):
    child, baseline = child_with_extra_thread(60)
    sample, waited = soak.settled_sample(child.pid, baseline, limit=2)
    assert sample["threads"] == baseline["threads"] + 1
    assert waited >= 2
