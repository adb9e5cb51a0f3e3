#!/usr/bin/env python
"""Render a benchmark run's JSON as one PNG: throughput, p50 latency and server CPU.

Each panel shows every server relative to a baseline per workload (1.0, the
dashed line): the better ceiling when the run measured ceilings
(benchmarks/run.py), else ``--baseline`` (default: our server, for
benchmarks/http_bench.py's KServe and MLServer peers). The workloads differ by
orders of magnitude and the machines are noisy: ratios are what to steer by.
Under each workload's name is what 1.0 stands for in that panel.

    python benchmarks/plot.py .bench/results-<time>.json -o docs/img/benchmark.png
    python benchmarks/plot.py            # the newest .bench/results-*.json
    python benchmarks/http_bench.py --json http.json && python benchmarks/plot.py http.json -o docs/img/http_benchmark.png

Reads the ``medians`` the harnesses write: one row per (workload, server) with
``infer_per_s``, ``cpu_ms_per_infer`` and, from run.py, ``p50_ms``; a panel
whose figure the file lacks is left out. Every server in the file gets a bar per workload, so
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
PANELS = (("infer_per_s", "inferences/s ÷ {base} (higher is better)"),
          ("p50_ms", "p50 latency ÷ {base} (lower is better)"),
          ("cpu_ms_per_infer", "server CPU per inference ÷ {base} (lower is better)"))


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


def baseline_row(value: dict, workload: str, servers: list[str], baseline: str):
    """The ceiling row with the most inferences/s (run.py's '*'), else the named server's row."""
    rows = [value[(workload, s)] for s in servers
            if s.startswith("ceiling") and (workload, s) in value]
    if rows:
        return max(rows, key=lambda r: r["infer_per_s"])
    return value.get((workload, baseline))


UNITS = {"infer_per_s": "{:,.0f}/s", "p50_ms": "{:.2f} ms", "cpu_ms_per_infer": "{:.3f} ms"}


def tick(workload: str, base, field: str) -> str:
    """The workload and what 1.0 is in this panel."""
    return f"{workload.replace(' ', chr(10))}\n1.0 = {UNITS[field].format(base[field])}"


def render(results: dict, out: Path, title: str = "", baseline: str = "ours") -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    medians = results["medians"]
    if not medians:
        raise SystemExit("the results file has no medians")
    workloads = ordered(m["workload"] for m in medians)
    servers = server_order(ordered(m["server"] for m in medians))
    value = {(m["workload"], m["server"]): m for m in medians}
    has_ceiling = any(s.startswith("ceiling") for s in servers)
    base_name = "ceiling" if has_ceiling else baseline
    if not has_ceiling and baseline not in servers:
        raise SystemExit(f"no ceiling in the results and no server named '{baseline}' "
                         f"to divide by (servers: {', '.join(servers)}); pass --baseline")
    base_rows = {w: baseline_row(value, w, servers, baseline) for w in workloads}
    # a workload nothing can be divided by (e.g. streaming, which the ceilings lack) is left out
    dropped = [w for w in workloads if base_rows[w] is None]
    workloads = [w for w in workloads if base_rows[w] is not None]
    if not workloads:
        raise SystemExit("no workload has a baseline row to divide by")
    panels = [(f, label.format(base=base_name)) for f, label in PANELS
              if all(f in m for m in medians)]
    width = 0.8 / len(servers)
    colors = plt.get_cmap("tab10").colors
    panel_width = max(6.0, 1.4 * len(workloads))
    fig, axes = plt.subplots(1, len(panels), figsize=(panel_width * len(panels), 5.2),
                             constrained_layout=True, squeeze=False)
    axes = axes[0]
    for ax, (field, label) in zip(axes, panels):
        plotted = []
        for i, server in enumerate(servers):
            xs, ys = [], []
            for j, workload in enumerate(workloads):
                row = value.get((workload, server))
                base = base_rows[workload]
                if row is not None and base is not None and base[field] > 0:
                    xs.append(j - 0.4 + width * (i + 0.5))
                    ys.append(row[field] / base[field])
            plotted += ys
            ax.bar(xs, ys, width=width * 0.95, label=server, color=colors[i % len(colors)],
                   hatch="//" if server.startswith("ceiling") else None, edgecolor="white")
        ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
        ax.set_xticks(range(len(workloads)), [tick(w, base_rows[w], field) for w in workloads], fontsize=8)
        positive = [y for y in plotted if y > 0]
        if positive and max(positive) / min(positive) > 20:  # a peer 100x off flattens the rest
            ax.set_yscale("log")
            label += ", log scale"
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(servers), fontsize=9)
    machine = results.get("machine", {})
    subtitle = (f"{results.get('started', '')[:16].replace('T', ' ')} UTC, "
                f"{machine.get('cores', '?')} cores, {machine.get('cpu', '')}\n"
                f"{results.get('command', '')}"
                + (f"\nnot drawn, no baseline: {', '.join(dropped)}" if dropped else ""))
    fig.suptitle((title or "triton_grpc_server against the baselines")
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
    parser.add_argument("--baseline", default="ours",
                        help="server to divide by when the run has no ceiling (default: ours)")
    args = parser.parse_args(argv)
    path = args.results or newest_results()
    out = render(json.loads(path.read_text()), args.out, args.title, args.baseline)
    print(f"wrote {out} from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
