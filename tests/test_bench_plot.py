"""benchmarks/plot.py renders the harness's results JSON as a PNG."""
from __future__ import annotations

import struct
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import plot  # noqa: E402

pytest.importorskip("matplotlib")


def results(servers, workloads):
    medians = [dict(workload=w, server=s, infer_per_s=1000.0 * (i + 1), mib_per_s=0.0,
                    p50_ms=1.0 + j, p99_ms=2.0 + j, cpu_ms_per_infer=0.1 * (i + 1),
                    other_cores=0.0, errors=0, requests=100, repeats=3)
               for j, w in enumerate(workloads) for i, s in enumerate(servers)]
    return {"command": "python benchmarks/run.py --quick", "started": "2026-12-01T23:00:00+00:00",
            "machine": {"cpu": "test cpu", "cores": 2}, "medians": medians}


def png_size(path):
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_renders_every_server_and_workload(tmp_path):
    servers = ["ours-sync-cython", "ceiling-sync", "kserve", "mlserver", "ceiling-aio"]
    out = plot.render(results(servers, ["add_sub C=1", "add_sub C=16"]), tmp_path / "b.png")
    width, height = png_size(out)
    assert width == 1800 and height > 400  # three 6-inch panels at 100 dpi


def test_ceilings_first_then_ours_then_other_baselines():
    order = plot.server_order(["mlserver", "ours-aio", "ceiling-sync", "ours-sync", "ceiling-aio"])
    assert order == ["ceiling-sync", "ceiling-aio", "ours-aio", "ours-sync", "mlserver"]


def test_empty_results_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        plot.render({"medians": []}, tmp_path / "b.png")


def test_the_docs_embed_the_committed_plot():
    assert png_size(ROOT / "docs" / "img" / "benchmark.png")[0] > 0
    assert "img/benchmark.png" in (ROOT / "docs" / "performance.md").read_text()


def test_http_results_divide_by_our_server_and_skip_missing_panels(tmp_path):
    """benchmarks/http_bench.py's JSON: no ceiling, no p50; KServe and MLServer peers."""
    data = results(["ours", "kserve", "mlserver"], ["add_sub JSON C=16"])
    for row in data["medians"]:
        del row["p50_ms"], row["p99_ms"]
    width, _ = png_size(plot.render(data, tmp_path / "http.png"))
    assert width == 1200  # two panels: throughput and CPU
    with pytest.raises(SystemExit, match="baseline"):
        plot.render(data, tmp_path / "x.png", baseline="triton")


def test_a_workload_without_a_ceiling_is_left_out(tmp_path):
    data = results(["ceiling-sync", "ours-aio-cython"], ["add_sub C=1"])
    data["medians"].append(dict(data["medians"][-1], workload="add_sub stream C=16"))
    width, _ = png_size(plot.render(data, tmp_path / "b.png"))
    assert width == 1800  # three panels of one workload each: the stream workload is not drawn
