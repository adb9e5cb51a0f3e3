"""Memory budget: the server's RSS after warm-up stays put under repeated small and 4 MiB requests.

The CI variant serves a few thousand requests; the ``slow`` one the full
100,000 small and 2,000 4 MiB requests. A ModelInfer and an HTTP infer body of
about 1.5 GB that fail validation are measured in ``slow`` tests too (what the
process keeps is in docs/reliability.md). Growth is read from /proc/<pid>/status
(VmRSS), after the server's idle trim has given its free heap pages back.
"""
from __future__ import annotations

import http.client
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from triton_grpc_server import heap

from models import error_of, identity_model, serve
from scheduling_models import write_model

BUDGET_BYTES = 5 << 20
LARGE = 4 << 20  # bytes of one large request's tensor
OVERSIZED = 1536 << 20  # bytes sent for a [1, 4] input by the oversized-request tests

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
# ``make test`` runs every marker; the full-size runs take minutes and ~3 GB, so opt in.
full_size = pytest.mark.skipif(os.environ.get("TGS_FULL_MEMORY_TESTS") != "1",
                               reason="full-size memory runs: set TGS_FULL_MEMORY_TESTS=1")


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("memory_repo")
    write_model(repo, "add", "add", "max_batch_size: 8\n")
    identity_model(repo, "big", "FP32", max_batch_size=0, dims=(-1,))
    # HTTP bodies over the 64 MiB default are refused before they are read; the oversized
    # HTTP test needs a body that is read and then fails validation.
    yield from serve(repo, "--http-max-input-size", str(OVERSIZED + (1 << 20)))


def _small(client, seed):
    data = np.full((1, 4), seed % 1000, np.float32)
    tensor = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(data)
    out = client.infer("add", [tensor]).as_numpy("OUTPUT0")
    assert out[0, 0] == data[0, 0] + 1


def _large(client, payload, tensor):
    out = client.infer("big", [tensor]).as_numpy("OUTPUT0")
    assert out.shape == payload.shape and out[-1] == payload[-1]


def serve_mix(server, small: int, large: int, threads: int = 4) -> None:
    payload = np.arange(LARGE // 4, dtype=np.float32)
    tensor = grpcclient.InferInput("INPUT0", list(payload.shape), "FP32")
    tensor.set_data_from_numpy(payload)
    clients = [server.client() for _ in range(threads)]
    try:
        with ThreadPoolExecutor(threads) as pool:
            def work(index):
                c = clients[index % threads]
                for i in range(index, small, threads):
                    _small(c, i)
                    if large and i % max(1, small // large) == 0:
                        _large(c, payload, tensor)
            list(pool.map(work, range(threads)))
    finally:
        for c in clients:
            c.close()


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process, all threads (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_rss(pid: int, timeout: float = 20.0) -> int:
    """RSS once the server has been idle long enough for its idle trim to have run.

    The trimmer acts on the first period of its own with under ``heap.IDLE_CPU_S`` of CPU;
    on a loaded box the server's threads (ONNX Runtime's spinning workers, gRPC's pollers)
    can take a few seconds after the last answer to get there. So wait until this side
    sees such a period too, then two of the trimmer's periods more.
    """
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(heap.IDLE_CHECK_S)
        now = cpu_seconds(pid)
        quiet = now - last < heap.IDLE_CPU_S
        last = now
        if quiet:
            break
    time.sleep(2 * heap.IDLE_CHECK_S)
    return rss(pid)


def _warm_up(server, small: int, large: int) -> None:
    # Thread pools, malloc arenas, ONNX Runtime's arena and gRPC buffers reach their
    # working size (here RSS settles after about 6,000 small and 150 large requests).
    serve_mix(server, max(small // 4, 6000), max(large // 4, 150))


def _growth(server, small: int, large: int) -> int:
    _warm_up(server, small, large)
    before = idle_rss(server.process.pid)
    serve_mix(server, small, large)
    return idle_rss(server.process.pid) - before


# The CI run is too short for malloc's arenas to settle on a loaded 2-core box (measured
# 0-12 MiB of growth between runs); its bound still fails a leak of one large tensor in
# four requests (100 MiB). The full-size ``slow`` variant holds the 5 MB budget.
CI_BUDGET_BYTES = 32 << 20


def test_rss_bounded_after_warm_up(server):
    growth = _growth(server, 4000, 100)
    assert growth < CI_BUDGET_BYTES, f"RSS grew by {growth / 2**20:.1f} MiB"


FULL_ROUNDS = 10
ENDS = 3  # idle readings whose median stands for the start and for the end


def _growth_in_rounds(server, small: int, large: int, rounds: int) -> tuple[int, list[int]]:
    """RSS growth under ``small`` + ``large`` requests served in ``rounds`` equal rounds:
    the median of the last ``ENDS`` idle readings against that of the reading after
    warm-up and the first ``ENDS - 1`` rounds.

    One idle reading moves by up to +-8 MiB from round to round here with no trend (which
    4 MiB blocks malloc's heaps and ONNX Runtime's arena still hold when the server goes
    idle), so a single pair of readings decides a 5 MB budget by chance. A leak climbs
    with every round and still moves the end's median by most of what it leaked.
    """
    _warm_up(server, small, large)
    readings = [idle_rss(server.process.pid)]
    for _ in range(rounds):
        serve_mix(server, small // rounds, large // rounds)
        readings.append(idle_rss(server.process.pid))
    start = statistics.median(readings[:ENDS])
    end = statistics.median(readings[-ENDS:])
    return int(end - start), readings


@pytest.mark.slow
@full_size
def test_rss_bounded_after_warm_up_full_size(server):
    growth, readings = _growth_in_rounds(server, 100_000, 2_000, FULL_ROUNDS)
    print(f"rss growth after 100k small + 2k 4 MiB: {growth / 2**20:.2f} MiB (idle readings, "
          "MiB: " + ", ".join(f"{r / 2**20:.1f}" for r in readings) + ")")
    assert growth < BUDGET_BYTES, f"RSS grew by {growth / 2**20:.1f} MiB"


@pytest.mark.slow
@full_size
def test_oversized_request_failing_validation_is_released(server):
    """~1.5 GB sent for a [1, 4] input: INVALID_ARGUMENT, and what the server keeps is measured."""
    pid = server.process.pid
    before = rss(pid)
    raw = np.zeros(OVERSIZED // 4, np.float32)
    tensor = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor._raw_content = raw.tobytes()  # declared [1, 4], sent 1.5 GB
    with server.client() as c:
        code, message = error_of(c.infer, "add", [tensor])
        del tensor, raw
        assert code == "INVALID_ARGUMENT", message
        peak_after = rss(pid)
        serve_mix(server, 200, 0)  # the next requests run as before
    after = rss(pid)
    print(f"1.5 GB invalid request: rss before {before / 2**20:.0f} MiB, right after "
          f"{peak_after / 2**20:.0f} MiB, after 200 more requests {after / 2**20:.0f} MiB")
    assert after - before < 64 << 20, "the server keeps much of a rejected 1.5 GB request"


@pytest.mark.slow
@full_size
def test_oversized_http_request_failing_validation_is_released(server):
    """The same ~1.5 GB for a [1, 4] input as an HTTP binary-extension body: 400, and released."""
    pid = server.process.pid
    before = rss(pid)
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4],
                                     "parameters": {"binary_data_size": OVERSIZED}}]}).encode()
    body = header + bytes(OVERSIZED)
    connection = http.client.HTTPConnection(server.http_url, timeout=300)
    try:
        connection.request("POST", "/v2/models/add/infer", body=body, headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream"})
        del body
        response = connection.getresponse()
        message = response.read().decode()
    finally:
        connection.close()
    assert response.status == 400, message
    assert "INPUT0" in message, message
    peak_after = rss(pid)
    serve_mix(server, 200, 0)
    after = rss(pid)
    print(f"1.5 GB invalid HTTP request: rss before {before / 2**20:.0f} MiB, right after "
          f"{peak_after / 2**20:.0f} MiB, after 200 more requests {after / 2**20:.0f} MiB")
    assert after - before < 64 << 20, "the server keeps much of a rejected 1.5 GB HTTP request"
