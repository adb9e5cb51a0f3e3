#!/usr/bin/env python
"""Soak with a hot swap: clients on a model mix while models are reloaded.

    python benchmarks/soak.py              # 10 minutes (make soak)
    python benchmarks/soak.py --minutes 2
    python benchmarks/soak.py --minutes 1   # the CI run (warm-up 30 s)

Two servers on free loopback ports, each with its own temporary repository:

* explicit mode: ``add`` (FP32 [-1, 4], +1), ``big`` (4 MiB FP32 identity),
  ``strings`` (BYTES identity), ``batched`` (``add`` with dynamic batching),
  ``py_identity`` (Python backend), ``repeat`` (Python backend, decoupled,
  driven over ModelStreamInfer), ``sequence`` (an ONNX accumulator whose
  running sum is implicit state kept by the sequence batcher, several
  sequences at once) and ``swap`` (INT32 +v); every ``--swap-secs``
  the soak writes version v+1 of ``swap`` and calls RepositoryModelLoad;
* poll mode: ``polled`` (INT32 +c); every ``--swap-secs`` the soak rewrites its
  model file with a new c and the poller reloads it.

gRPC and HTTP client threads run back to back (the machine's sustainable
rate); every answer is checked (``swap`` against the version that answered,
``polled`` against the constants written so far, ``sequence`` against the
running sum of its own sequence). Every second the server's RSS, threads and
open descriptors are sampled. The pass line: zero failed or wrong requests,
RSS growth after warm-up < 5 MB (the median of the last window of samples
against that of the first window after warm-up, see ``rss_levels``; judged in
runs of 5 minutes or more, reported in shorter ones), no growth in
threads or descriptors (the end reading is taken once the server is idle, see
``SETTLE_SECS``), p99 during swaps <= 2x p99 outside them. The figures
are printed and written to ``.bench/soak-<time>.json``; the exit status is 1
when a check fails.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from onnx import TensorProto  # noqa: E402

from conftest import ServerHandle  # noqa: E402
from models import _examples, add_const_onnx, identity_model, write_text  # noqa: E402
from python_models import IDENTITY, REPEAT, python_model  # noqa: E402
from scheduling_models import write_model  # noqa: E402

SWAP_CONFIG = '''name: "{name}"
backend: "onnxruntime"
max_batch_size: 8
version_policy: {{ latest: {{ num_versions: 1 }} }}
input [ {{ name: "INPUT0" data_type: TYPE_INT32 dims: [ 4 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 4 ] }} ]
'''
BIG = 4 << 20
SAMPLE_SECS = 1.0
# Shorter runs report RSS growth but do not judge it: here RSS climbs for the first 20-40 s
# (malloc's heap growing to what the 4 MiB requests in flight need) and single samples move
# by +-8 MB, so in a 60 s run the 5 MB check would measure the climb, not a leak.
RSS_JUDGED_FROM_MINUTES = 5.0
# gRPC core's event-engine pool starts an extra thread whenever all of its threads are busy
# and lets each extra one go after 20 s without work (a worker rechecks at most every 3 s),
# so a thread count read the moment the clients stop can hold a thread the pool will drop.
# The end reading waits up to this long for the counts to come back; a leaked thread stays.
SETTLE_SECS = 30.0
SEQUENCE_WORKERS = 3  # sequences in flight at once, batched together by the oldest strategy


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = defaultdict(lambda: defaultdict(int))  # model -> outcome -> n
        self.latency = {"swap": [], "steady": []}
        self.failures = []
        self.swapping_until = 0.0
        self.seen = defaultdict(set)  # swap: versions that answered; polled: constants

    def record(self, model: str, outcome: str, seconds: float, detail: str = "") -> None:
        with self.lock:
            self.counts[model][outcome] += 1
            window = "swap" if time.monotonic() < self.swapping_until else "steady"
            self.latency[window].append(seconds)
            if outcome != "ok" and len(self.failures) < 50:
                self.failures.append(f"{model}: {outcome}: {detail[:200]}")


def _proc(pid: int) -> dict:
    info = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "Threads:")):
                key, value = line.split(":", 1)
                info[key] = int(value.split()[0])
    return {"rss_mb": info["VmRSS"] / 1024, "threads": info["Threads"],
            "fds": len(os.listdir(f"/proc/{pid}/fd")), "thread_names": _thread_names(pid)}


def _thread_names(pid: int) -> dict:
    """Threads by kernel name (gRPC core names its own; Python and ONNX Runtime threads read
    "python"): which kind a thread-count change is made of."""
    names = Counter()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as comm:
                names[comm.read().strip()] += 1
        except OSError:  # the thread ended between listing and reading
            pass
    return dict(sorted(names.items()))


def settled_sample(pid: int, baseline: dict, limit: float = SETTLE_SECS) -> tuple[dict, float]:
    """(the server's counts once idle, seconds waited): read again every second while the
    thread or descriptor count is above the baseline, for at most ``limit`` seconds."""
    began = time.monotonic()
    while True:
        sample = _proc(pid)
        waited = time.monotonic() - began
        settled = sample["threads"] <= baseline["threads"] and sample["fds"] <= baseline["fds"]
        if settled or waited >= limit:
            return sample, round(waited, 1)
        time.sleep(1.0)


def build_repos(base: Path) -> tuple[Path, Path]:
    explicit, polled = base / "explicit", base / "poll"
    write_model(explicit, "add", "add", "max_batch_size: 8\n")
    write_model(explicit, "batched", "add", "max_batch_size: 8\n"
                "dynamic_batching { max_queue_delay_microseconds: 500 }\n")
    write_model(explicit, "strings", "strings", "max_batch_size: 8\n")
    identity_model(explicit, "big", "FP32", max_batch_size=0, dims=(-1,))
    python_model(explicit, "py_identity", IDENTITY, [("INPUT0", "TYPE_FP32", [-1])],
                 [("OUTPUT0", "TYPE_FP32", [-1])])
    python_model(explicit, "repeat", REPEAT, [("IN", "TYPE_INT32", [-1])],
                 [("OUT", "TYPE_INT32", [1]), ("IDX", "TYPE_UINT32", [1])],
                 extra="model_transaction_policy { decoupled: true }\n")
    _examples.make_string_dyna_sequence(explicit / "sequence", name="sequence")
    add_const_onnx(explicit / "swap" / "1" / "model.onnx", 1, onnx_dtype=TensorProto.INT32)
    write_text(explicit / "swap" / "config.pbtxt", SWAP_CONFIG.format(name="swap"))
    add_const_onnx(polled / "polled" / "1" / "model.onnx", 100, onnx_dtype=TensorProto.INT32)
    write_text(polled / "polled" / "config.pbtxt", SWAP_CONFIG.format(name="polled"))
    return explicit, polled


def _tensor(module, name, array):
    datatype = "BYTES" if array.dtype == object else module.np_to_triton_dtype(array.dtype)
    tensor = module.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def unary_worker(name, url, module, model, stop, tally, polled_constants=None):
    client = module.InferenceServerClient(url)
    rng = np.random.default_rng(abs(hash((name, model))) % 2**32)
    big = np.arange(BIG // 4, dtype=np.float32)
    while not stop.is_set():
        if model in ("add", "batched"):
            data = rng.random((1, 4), dtype=np.float32)
            inputs, check = [_tensor(module, "INPUT0", data)], lambda r: np.array_equal(
                r.as_numpy("OUTPUT0"), data + 1)
        elif model == "big":
            inputs = [_tensor(module, "INPUT0", big)]
            check = lambda r: r.as_numpy("OUTPUT0")[-1] == big[-1]  # noqa: E731
        elif model == "strings":
            words = np.array([[f"s{rng.integers(1 << 30)}".encode()]], dtype=object)
            inputs = [_tensor(module, "INPUT0", words)]
            check = lambda r: r.as_numpy("OUTPUT0").tolist() == words.tolist()  # noqa: E731
        elif model == "py_identity":
            data = rng.random(16, dtype=np.float32)
            inputs = [_tensor(module, "INPUT0", data)]
            check = lambda r: np.array_equal(r.as_numpy("OUTPUT0"), data)  # noqa: E731
        else:  # swap / polled: +version or +one of the constants written
            data = rng.integers(0, 1000, (1, 4), dtype=np.int32)
            inputs = [_tensor(module, "INPUT0", data)]

            def check(r, data=data):
                delta = r.as_numpy("OUTPUT0") - data
                if model == "swap":
                    version = int(r.get_response()["model_version"] if module is httpclient
                                  else r.get_response().model_version)
                    tally.seen["swap"].add(version)
                    return bool(np.all(delta == version))
                tally.seen["polled"].add(int(delta[0, 0]))
                return int(delta[0, 0]) in polled_constants and bool(np.all(delta == delta[0, 0]))
        start = time.monotonic()
        try:
            result = client.infer(model, inputs)
        except Exception as exc:  # every failure counts
            tally.record(model, "failed", time.monotonic() - start, str(exc))
            continue
        ok = check(result)
        tally.record(model, "ok" if ok else "wrong", time.monotonic() - start)
    client.close()


def stream_worker(url, stop, tally):
    client = grpcclient.InferenceServerClient(url)
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    while not stop.is_set():
        values = list(range(4))
        start = time.monotonic()
        client.async_stream_infer("repeat", [_tensor(grpcclient, "IN", np.array(values, np.int32))])
        got, outcome, detail = [], "ok", ""
        try:
            for _ in values:
                result, error = answers.get(timeout=30)
                if error is not None:
                    outcome, detail = "failed", str(error)
                    break
                got.append(int(result.as_numpy("OUT")[0]))
        except queue.Empty:
            outcome, detail = "failed", "no response in 30 s"
        if outcome == "ok" and got != values:
            outcome = "wrong"
        tally.record("repeat(stream)", outcome, time.monotonic() - start, detail)
    client.stop_stream()
    client.close()


def sequence_worker(index, url, stop, tally):
    """Sequences back to back on the ``sequence`` accumulator, each answer checked.

    Each answer is the running sum of the sequence's inputs; the last (END) also
    adds the correlation id read as a number. A failed or wrong answer abandons
    the sequence (the batcher's idle timeout frees its slot); the next one starts
    with a fresh id.
    """
    client = grpcclient.InferenceServerClient(url)
    rng = np.random.default_rng(index)
    count = 0
    while not stop.is_set():
        count += 1
        sequence_id = str(index * 10_000_000 + count)
        length = int(rng.integers(2, 9))
        total = 0
        for step in range(length):
            value = int(rng.integers(-100, 101))
            last = step == length - 1
            total += value
            expected = total + (int(sequence_id) if last else 0)
            start = time.monotonic()
            try:
                result = client.infer("sequence", [_tensor(grpcclient, "INPUT", np.full(
                    (1, 1), value, np.int32))], sequence_id=sequence_id,
                    sequence_start=step == 0, sequence_end=last)
            except Exception as exc:  # every failure counts
                tally.record("sequence", "failed", time.monotonic() - start, str(exc))
                break
            got = int(result.as_numpy("OUTPUT")[0][0])
            ok = got == expected
            tally.record("sequence", "ok" if ok else "wrong", time.monotonic() - start,
                         f"sequence {sequence_id} step {step}: {got} != {expected}")
            if not ok:
                break
    client.close()


def default_warmup(duration: float) -> float:
    """Seconds before the RSS/thread/descriptor baseline is taken.

    A fifth of the run, at most 60 s; but at least 30 s (or half of a shorter
    run). Here the server's RSS climbs for the first 20-40 s, while the 4 MiB
    requests grow malloc's heap to what their concurrency needs, and only then
    levels off; a 60 s run (the CI's) compares its second half with itself.
    """
    return min(60.0, max(duration / 5, min(30.0, duration / 2)))


def rss_levels(samples, warmup: float, duration: float) -> tuple[float, float, float]:
    """(RSS just after warm-up, RSS at the end, window): medians of the samples in the first and
    the last ``window`` seconds after warm-up.

    Single samples move by +-8 MB from one second to the next here (the 4 MiB
    requests in flight, malloc's arenas), which would decide a 5 MB check by
    chance in a short run; a median over a window does not move with them,
    while a leak raises the end window as a whole.
    """
    window = min(30.0, max(duration - warmup, 0.0) / 3)

    def median_in(start, end):
        values = [s["rss_mb"] for s in samples if start <= s["t"] <= end]
        return statistics.median(values) if values else None

    first = median_in(warmup, warmup + window)
    last = median_in(duration - window, duration)
    if first is None or last is None:  # a run too short for windows: first and last sample
        first, last = samples[0]["rss_mb"], samples[-1]["rss_mb"]
    return first, last, window


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--swap-secs", type=float, default=30.0)
    parser.add_argument("--warmup-secs", type=float, default=None,
                        help="RSS baseline after this long (default: a fifth of the run, "
                             "30-60 s, at most half of it)")
    args = parser.parse_args()
    duration = args.minutes * 60
    warmup = args.warmup_secs if args.warmup_secs is not None else default_warmup(duration)

    base = Path(tempfile.mkdtemp(prefix="tgs-soak-"))
    explicit_repo, poll_repo = build_repos(base)
    explicit = ServerHandle(explicit_repo, ["--model-control-mode", "explicit", "--load-model", "*",
                                            "--allow-metrics", "false"])
    polling = ServerHandle(poll_repo, ["--model-control-mode", "poll", "--repository-poll-secs", "2",
                                       "--allow-metrics", "false"])
    tally, stop = Tally(), threading.Event()
    polled_constants = {100}
    workers = [
        threading.Thread(target=unary_worker, args=("g", explicit.url, grpcclient, m, stop, tally))
        for m in ("add", "batched", "strings", "big", "py_identity", "swap")]
    workers += [
        threading.Thread(target=unary_worker, args=("h", explicit.http_url, httpclient, m, stop, tally))
        for m in ("add", "big", "swap")]
    workers.append(threading.Thread(target=stream_worker, args=(explicit.url, stop, tally)))
    workers += [threading.Thread(target=sequence_worker, args=(i + 1, explicit.url, stop, tally))
                for i in range(SEQUENCE_WORKERS)]
    workers.append(threading.Thread(target=unary_worker, args=(
        "p", polling.url, grpcclient, "polled", stop, tally, polled_constants)))
    samples, swaps = [], []
    started = time.monotonic()
    for worker in workers:
        worker.start()
    version, constant = 1, 100
    next_swap, next_sample = started + args.swap_secs, started
    try:
        with explicit.client() as control:
            while time.monotonic() - started < duration:
                now = time.monotonic()
                if now >= next_sample:
                    samples.append({"t": round(now - started, 1), **_proc(explicit.process.pid)})
                    next_sample += SAMPLE_SECS
                if now >= next_swap:
                    version, constant = version + 1, constant + 1
                    add_const_onnx(explicit_repo / "swap" / str(version) / "model.onnx", version,
                                   onnx_dtype=TensorProto.INT32)
                    polled_constants.add(constant)
                    polled_file = poll_repo / "polled" / "1" / "model.onnx"
                    add_const_onnx(polled_file.with_suffix(".tmp"), constant,
                                   onnx_dtype=TensorProto.INT32)
                    os.replace(polled_file.with_suffix(".tmp"), polled_file)
                    tally.swapping_until = time.monotonic() + 60  # until the load returns
                    begin = time.monotonic()
                    control.load_model("swap")
                    swaps.append(round(time.monotonic() - begin, 3))
                    # the poller's reload lands within a poll interval or two
                    tally.swapping_until = time.monotonic() + 5
                    next_swap += args.swap_secs
                time.sleep(0.2)
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)
        stop_sample = _proc(explicit.process.pid)
        after_warmup = [s for s in samples if s["t"] >= warmup] or samples
        baseline = after_warmup[0]
        end_sample, settle_s = settled_sample(explicit.process.pid, baseline)
        explicit.stop()
        polling.stop()

    rss_start, rss_end, rss_window = rss_levels(samples, warmup, duration)
    lat = {k: sorted(v) for k, v in tally.latency.items()}

    def p99(values):
        return values[int(0.99 * (len(values) - 1))] * 1000 if values else None

    counts = {m: dict(c) for m, c in sorted(tally.counts.items())}
    total = sum(sum(c.values()) for c in counts.values())
    bad = sum(c.get("failed", 0) + c.get("wrong", 0) for c in counts.values())
    report = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "minutes": args.minutes, "warmup_secs": warmup, "swap_secs": args.swap_secs,
        "swaps": len(swaps),
        "swap_load_s": swaps, "requests": total, "bad": bad, "counts": counts,
        "rss_mb": {"after_warmup": round(rss_start, 1), "end": round(rss_end, 1),
                   "growth": round(rss_end - rss_start, 1),
                   "median_window_s": round(rss_window, 1),
                   "last_sample": round(end_sample["rss_mb"], 1),
                   "min": round(min(s["rss_mb"] for s in after_warmup), 1),
                   "max": round(max(s["rss_mb"] for s in samples), 1)},
        "threads": {"after_warmup": baseline["threads"], "at_stop": stop_sample["threads"],
                    "end": end_sample["threads"], "max": max(s["threads"] for s in samples),
                    "after_warmup_names": baseline["thread_names"],
                    "end_names": end_sample["thread_names"]},
        "fds": {"after_warmup": baseline["fds"], "at_stop": stop_sample["fds"],
                "end": end_sample["fds"], "max": max(s["fds"] for s in samples)},
        "end_read_after_idle_s": settle_s,
        "p99_ms": {"steady": p99(lat["steady"]), "swap": p99(lat["swap"])},
        "requests_in_swap_windows": len(lat["swap"]),
        "swap_versions_seen": len(tally.seen["swap"]),
        "polled_constants_seen": len(tally.seen["polled"]),
        "failures": tally.failures[:10],
        "samples": samples,
    }
    growth = rss_end - rss_start
    checks = {
        "no failed or wrong requests": bad == 0,
        "rss growth after warm-up < 5 MB": (growth < 5 if args.minutes >= RSS_JUDGED_FROM_MINUTES
                                            else None),
        "no thread growth": end_sample["threads"] <= baseline["threads"],
        "no fd growth": end_sample["fds"] <= baseline["fds"],
        "p99 in swaps <= 2x p99 outside": (report["p99_ms"]["swap"] is None or
                                           report["p99_ms"]["swap"] <= 2 * report["p99_ms"]["steady"]),
    }
    report["checks"] = checks
    out = ROOT / ".bench" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    for name, passed in checks.items():
        verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[passed]
        note = (f" ({growth:+.1f} MB; judged in runs of {RSS_JUDGED_FROM_MINUTES:g} minutes "
                "or more)" if passed is None else "")
        print(f"{verdict}  {name}{note}")
    print(f"written to {out}")
    return 1 if False in checks.values() else 0


if __name__ == "__main__":
    sys.exit(main())
