#!/usr/bin/env python
"""Render a benchmark run's JSON as one PNG: throughput, p50 latency and server CPU.

Each panel shows every server relative to the better ceiling of its workload
(1.0, the dashed line), because the workloads differ by orders of magnitude and
the machines are noisy: ratios are what to steer by. Under each workload's
name is what 1.0 stands for in that panel.

    python benchmarks/plot.py .bench/results-<time>.json -o docs/img/benchmark.png
    python benchmarks/plot.py            # the newest .bench/results-*.json

Reads the ``medians`` the harness (``benchmarks/run.py``) writes: one row per
(workload, server) with ``infer_per_s``, ``p50_ms``, ``p99_ms`` and
``cpu_ms_per_infer``. Every server in the file gets a bar per workload, so
other baselines (KServe, MLServer...) appear as soon as the harness measures
them; ceilings are drawn hatched. Needs matplotlib (``pip install matplotlib``;
the test extra has it).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PANELS = (("infer_per_s", "inferences/s ÷ ceiling (higher is better)"),
          ("p50_ms", "p50 latency ÷ ceiling (lower is better)"),
          ("cpu_ms_per_infer", "server CPU per inference ÷ ceiling (lower is better)"))


def newest_results() -> Path:
    runs = sorted((ROOT / ".bench").glob("results-*.json"))
    if not runs:
        raise SystemExit("no .bench/results-*.json: run python benchmarks/run.py first, "
                         "or name a results file")
    return runs[-1]


def ordered(values):
    """Unique values in first-seen order."""
    return list(dict.fromkeys(values))


def server_order(servers: list[str]) -> list[str]:
    """Ceilings first, then ours, then any other baseline, each group as first seen."""
    def group(name: str) -> int:
        return 0 if name.startswith("ceiling") else 1 if name.startswith("ours") else 2
    return sorted(servers, key=lambda s: (group(s), servers.index(s)))


def best_ceiling(value: dict, workload: str, servers: list[str]):
    """The ceiling row with the most inferences/s for ``workload`` (the harness's '*')."""
    rows = [value[(workload, s)] for s in servers
            if s.startswith("ceiling") and (workload, s) in value]
    return max(rows, key=lambda r: r["infer_per_s"]) if rows else None


UNITS = {"infer_per_s": "{:,.0f}/s", "p50_ms": "{:.2f} ms", "cpu_ms_per_infer": "{:.3f} ms"}


def tick(workload: str, base, field: str) -> str:
    """The workload and what 1.0 is in this panel."""
    if base is None:
        return f"{workload}\n(no ceiling)"
    return f"{workload}\n1.0 = {UNITS[field].format(base[field])}"


def render(results: dict, out: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    medians = results["medians"]
    if not medians:
        raise SystemExit("the results file has no medians")
    workloads = ordered(m["workload"] for m in medians)
    servers = server_order(ordered(m["server"] for m in medians))
    value = {(m["workload"], m["server"]): m for m in medians}
    baseline = {w: best_ceiling(value, w, servers) for w in workloads}
    width = 0.8 / len(servers)
    colors = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(1, len(PANELS), figsize=(6 * len(PANELS), 5.2), constrained_layout=True)
    for ax, (field, label) in zip(axes, PANELS):
        for i, server in enumerate(servers):
            xs, ys = [], []
            for j, workload in enumerate(workloads):
                row = value.get((workload, server))
                base = baseline[workload]
                if row is not None and base is not None and base[field] > 0:
                    xs.append(j - 0.4 + width * (i + 0.5))
                    ys.append(row[field] / base[field])
            ax.bar(xs, ys, width=width * 0.95, label=server, color=colors[i % len(colors)],
                   hatch="//" if server.startswith("ceiling") else None, edgecolor="white")
        ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
        ax.set_xticks(range(len(workloads)), [tick(w, baseline[w], field) for w in workloads], fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(servers), fontsize=9)
    machine = results.get("machine", {})
    subtitle = (f"{results.get('started', '')[:16].replace('T', ' ')} UTC, "
                f"{machine.get('cores', '?')} cores, {machine.get('cpu', '')}; "
                f"`{results.get('command', '')}`")
    fig.suptitle((title or "ModelInfer: triton_grpc_server against the baselines")
                 + "\n" + subtitle, fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("results", nargs="?", type=Path, help="results JSON (default: newest)")
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "img" / "benchmark.png")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    path = args.results or newest_results()
    out = render(json.loads(path.read_text()), args.out, args.title)
    print(f"wrote {out} from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
