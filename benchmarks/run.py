#!/usr/bin/env python
"""One-command benchmark: our server against the bare-grpcio ceiling.

    python benchmarks/run.py            # full run (about 8 minutes on 2 cores)
    python benchmarks/run.py --quick    # 1-2 minutes

Everything runs on 127.0.0.1 free ports and is started here: a temporary model
repository (``add_sub``, ``identity_4m``, written as ONNX), two ceiling servers
(``benchmarks/ceiling.py``, sync and aio) and our server (``--before DIR`` adds another
checkout's, e.g. main before a change, in both of its loops)
with each codec. Each (workload, server) pair is measured ``--repeats`` times,
interleaved (the server order rotates every repeat), and the medians are
printed as a Markdown table with ratios to the better ceiling, followed by
the codec ratio, the RSS check and the issue's targets. The raw numbers go to
``.bench/results-<time>.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

import breakdown  # noqa: E402
import grpc_peers  # noqa: E402
import loadgen  # noqa: E402
import workloads  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20


# -- servers -------------------------------------------------------------------------------

@dataclasses.dataclass
class ServerSpec:
    name: str
    command: list          # argv after the interpreter, {port}/{repo}/{tmp} filled in
    env: dict = dataclasses.field(default_factory=dict)
    root: Path = ROOT      # the checkout whose package the server runs
    # A peer server in its own environment: make(tmp, port, spare_port) -> full argv.
    make: object = None

    @property
    def streams(self) -> bool:
        """Serves ModelStreamInfer (the ceilings and the pre-streaming checkout do not)."""
        return self.name.startswith("ours")

    @property
    def is_ceiling(self) -> bool:
        return self.name.startswith("ceiling")

    @property
    def is_peer(self) -> bool:
        return self.make is not None


def server_specs(codecs: list[str], before: Path | None = None, peers: list[str] = (),
                 workers: list[int] = ()) -> list[ServerSpec]:
    responses = ["--response", "add_sub={tmp}/add_sub.response",
                 "--response", "identity_4m={tmp}/identity_4m.response"]
    specs = [ServerSpec(f"ceiling-{mode}", [str(HERE / "ceiling.py"), "--mode", mode,
                                            "--port", "{port}", *responses])
             for mode in ("sync", "aio")]
    # The configs are complete, so auto-complete is off: like Triton with Triton's `simple`,
    # add_sub runs without a dynamic batcher (auto-complete would add one).
    ours = ["-m", "triton_grpc_server", "--model-repository", "{repo}", "--grpc-address",
            "127.0.0.1", "--grpc-port", "{port}", "--allow-metrics", "false",
            "--disable-auto-complete-config", "--allow-http", "false"]
    for codec in codecs:
        for loop in ("aio",):  # the one serving loop (docs/performance.md)
            specs.append(ServerSpec(f"ours-{loop}-{codec}",
                                    ours + ["--grpc-server", loop, "--infer-codec", codec]))
    for count in workers:  # --workers N: N processes on the port, CPU summed over all
        specs.append(ServerSpec(f"ours-aio-{codecs[0]}-w{count}",
                                ours + ["--infer-codec", codecs[0], "--workers", str(count)]))
    if before is not None:  # another checkout (e.g. main before a change), same run
        for loop in ("aio",):
            specs.append(ServerSpec(f"before-{loop}-{codecs[0]}",
                                    ours + ["--grpc-server", loop, "--infer-codec", codecs[0]],
                                    root=before))
    for peer in peers:  # KServe, MLServer: their own venvs (grpc_peers.py)
        specs.append(ServerSpec(peer, [], make=grpc_peers.PEERS[peer]))
    return specs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, spec: ServerSpec, repo: Path, tmp: Path):
        self.spec = spec
        self.port = free_port()
        fill = {"port": str(self.port), "repo": str(repo), "tmp": str(tmp)}
        if spec.is_peer:
            argv = spec.make(tmp, self.port, free_port())
        else:
            argv = [sys.executable] + [a.format(**fill) for a in spec.command]
        self.frame_lens: dict = {}  # model -> length of this server's response frame
        self.log_path = tmp / f"{spec.name}.log"
        env = dict(os.environ, PYTHONPATH=str(spec.root))
        env.update(spec.env)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            env=env, cwd=str(spec.root))

    def wait_ready(self, message: bytes, timeout: float = 120.0) -> None:
        import grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            call = channel.unary_unary(loadgen.PATH)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.spec.name} exited:\n{self.log_path.read_text()}")
                try:
                    call(message, timeout=5)
                    return
                except grpc.RpcError:
                    time.sleep(0.2)
        raise RuntimeError(f"{self.spec.name} not ready after {timeout}s")

    def measure_frames(self, messages: dict) -> None:
        """Each model's response frame length from this server (peers' differ from ours)."""
        import grpc

        options = [("grpc.max_receive_message_length", 2**31 - 1),
                   ("grpc.max_send_message_length", 2**31 - 1)]
        with grpc.insecure_channel(f"127.0.0.1:{self.port}", options=options) as channel:
            call = channel.unary_unary(loadgen.PATH)
            for model, message in messages.items():
                self.frame_lens[model] = 5 + len(call(message, timeout=60, wait_for_ready=True))

    def cpu_seconds(self) -> float:
        """utime+stime of the server and every process under it (--workers, peers' workers)."""
        return sum(_process_cpu(pid) for pid in _process_tree(self.process.pid))

    def minor_faults(self) -> int:
        """Minor page faults of the server and every process under it: a buffer that is
        mapped afresh for each request costs one per 4 KiB page, which CPU time alone
        does not say."""
        return sum(_process_faults(pid) for pid in _process_tree(self.process.pid))

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (state first), or None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _process_cpu(pid: int) -> float:
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS if fields else 0.0  # utime + stime


def _process_faults(pid: int) -> int:
    fields = _stat_fields(pid)
    return int(fields[7]) if fields else 0  # minflt


def _process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


# -- measuring -------------------------------------------------------------------------------

def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS  # minus idle and iowait


def steal_seconds() -> float:
    """CPU seconds the hypervisor gave to other guests (/proc/stat's steal column)."""
    return int(Path("/proc/stat").read_text().split("\n", 1)[0].split()[8]) / CLOCK_TICKS


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # finished load generators
    return usage.ru_utime + usage.ru_stime


@dataclasses.dataclass
class Sample:
    server: str
    workload: str
    repeat: int
    infer_per_s: float
    mib_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_infer: float
    other_cores: float      # CPU busy outside the server and the load generator (noise)
    requests: int
    errors: int
    steal_cores: float = 0.0  # cores the hypervisor gave elsewhere (noise)
    faults_per_infer: float = 0.0  # the server's minor page faults per inference


class Bench:
    def __init__(self, tmp: Path, models: dict, use_h2load: bool):
        self.tmp = tmp
        self.models = models
        self.use_h2load = use_h2load
        self.frames = {}
        for name, model in models.items():
            message = workloads.request_message(model)
            (tmp / f"{name}.message").write_bytes(message)
            (tmp / f"{name}.frame").write_bytes(workloads.grpc_frame(message))
            response = workloads.response_message(model)
            (tmp / f"{name}.response").write_bytes(response)
            self.frames[name] = len(workloads.grpc_frame(response))

    def load(self, server: Server, model: str, concurrency: int, requests: int,
             mode: str = "unary"):
        if mode != "unary":
            return loadgen.aio_loadgen(server.port, self.tmp / f"{model}.message", concurrency,
                                       requests, stream=mode == "stream")
        if self.use_h2load:
            return loadgen.h2load(server.port, self.tmp / f"{model}.frame",
                                  server.frame_lens.get(model, self.frames[model]),
                                  concurrency, requests)
        return loadgen.aio_loadgen(server.port, self.tmp / f"{model}.message", concurrency,
                                   requests)

    def measure(self, server: Server, workload, repeat: int, seconds: float,
                rate_guess: float) -> Sample:
        model, c = workload.model, workload.concurrency
        if rate_guess > 0:
            warm = max(2 * c, int(rate_guess * seconds * 0.1))
        else:  # first visit: enough to open the connections and estimate the rate
            warm = 25 * c if model.payload_bytes < MIB else 2 * c
        warm_result = self.load(server, model.name, c, warm, workload.mode)
        rate = warm_result.rate if repeat == 0 or rate_guess <= 0 else rate_guess
        count = max(4 * c, int(rate * seconds))
        cpu, busy, gen = server.cpu_seconds(), machine_busy_seconds(), children_cpu_seconds()
        faults = server.minor_faults()
        steal = steal_seconds()
        started = time.monotonic()
        result = self.load(server, model.name, c, count, workload.mode)
        wall = time.monotonic() - started
        cpu = server.cpu_seconds() - cpu
        faults = server.minor_faults() - faults
        steal = steal_seconds() - steal
        others = machine_busy_seconds() - busy - cpu - (children_cpu_seconds() - gen) - steal
        return Sample(server.spec.name, workload.label, repeat, result.rate,
                      result.rate * model.payload_bytes / MIB, result.percentile_ms(50),
                      result.percentile_ms(99), 1000 * cpu / max(result.requests, 1),
                      max(others, 0.0) / wall, result.requests, result.errors + warm_result.errors,
                      steal / wall, faults / max(result.requests, 1))


def median_rows(samples: list[Sample]) -> dict:
    rows = {}
    for s in samples:
        rows.setdefault((s.workload, s.server), []).append(s)
    out = {}
    for key, group in rows.items():
        out[key] = {field: statistics.median(getattr(s, field) for s in group)
                    for field in ("infer_per_s", "mib_per_s", "p50_ms", "p99_ms",
                                  "cpu_ms_per_infer", "other_cores", "steal_cores",
                                  "faults_per_infer")}
        out[key]["errors"] = sum(s.errors for s in group)
        out[key]["requests"] = sum(s.requests for s in group)
        out[key]["repeats"] = len(group)
    return out


# -- reporting ---------------------------------------------------------------------------------

def machine() -> dict:
    import grpc

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    h2 = (subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip()
          if loadgen.have_h2load() else "not installed")
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "grpcio": grpc.__version__, "h2load": h2}


def best_ceilings(rows: dict) -> dict:
    best = {}
    for (workload, server), row in rows.items():
        if server.startswith("ceiling") and row["infer_per_s"] > best.get(workload, ("", 0))[1]:
            best[workload] = (server, row["infer_per_s"])
    return {w: rows[(w, s)] | {"server": s} for w, (s, _) in best.items()}


def table(rows: dict, workload_order: list[str], server_order: list[str]) -> str:
    ceilings = best_ceilings(rows)
    lines = ["| workload | server | infer/s | MiB/s each way | p50 ms | p99 ms | CPU ms/infer "
             "| infer/s ÷ ceil | p50 ÷ ceil | CPU ÷ ceil | faults/infer | errors | others' CPU "
             "| steal |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for workload in workload_order:
        ceiling = ceilings.get(workload)
        for server in server_order:
            row = rows.get((workload, server))
            if row is None:
                continue

            def ratio(field, row=row):
                return row[field] / ceiling[field] if ceiling and ceiling[field] else float("nan")
            mark = " *" if ceiling and ceiling["server"] == server else ""
            lines.append(
                f"| {workload} | {server}{mark} | {row['infer_per_s']:,.0f} | "
                f"{row['mib_per_s']:,.1f} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | "
                f"{row['cpu_ms_per_infer']:.3f} | {ratio('infer_per_s'):.2f} | "
                f"{ratio('p50_ms'):.2f} | {ratio('cpu_ms_per_infer'):.2f} | "
                f"{row['faults_per_infer']:,.1f} | {row['errors']} | "
                f"{row['other_cores']:.2f} | {row['steal_cores']:.2f} |")
    return "\n".join(lines)


def peer_ratios(rows: dict, workload_order: list[str], ours: str, peers: list[str]) -> list[str]:
    """Ours against each peer: infer/s, p50 and CPU per inference, per workload."""
    lines = []
    for workload in workload_order:
        mine = rows.get((workload, ours))
        for peer in peers:
            theirs = rows.get((workload, peer))
            if mine and theirs and theirs["infer_per_s"] and mine["cpu_ms_per_infer"]:
                lines.append(
                    f"- {workload}: {ours} / {peer}: infer/s {mine['infer_per_s'] / theirs['infer_per_s']:.2f}x, "
                    f"p50 {mine['p50_ms'] / theirs['p50_ms']:.2f}x, "
                    f"CPU/infer {mine['cpu_ms_per_infer'] / theirs['cpu_ms_per_infer']:.2f}x")
    return lines


def peer_targets(rows: dict, ours: str) -> list[str]:
    """The small-request targets against the ceiling and the peers, where measured."""
    ceilings = best_ceilings(rows)
    out = []

    def check(label, value, ok):
        out.append(f"- {label}: {value:.2f}x -> {'met' if ok else 'NOT met'}")

    c16 = rows.get(("add_sub C=16", ours))
    if c16 and "add_sub C=16" in ceilings:
        cpu = min(rows[("add_sub C=16", s)]["cpu_ms_per_infer"] for s in ("ceiling-sync", "ceiling-aio")
                  if ("add_sub C=16", s) in rows)
        check(f"{ours} add_sub C=16 CPU/infer <= 1.3x the better ceiling's",
              c16["cpu_ms_per_infer"] / cpu, c16["cpu_ms_per_infer"] / cpu <= 1.3)
        for peer, bound in (("kserve", 1.4), ("mlserver", 2.5)):
            theirs = rows.get(("add_sub C=16", peer))
            if theirs:
                r = c16["infer_per_s"] / theirs["infer_per_s"]
                check(f"{ours} add_sub C=16 infer/s >= {bound}x {peer}", r, r >= bound)
    c1 = rows.get(("add_sub C=1", ours))
    if c1 and "add_sub C=1" in ceilings:
        r = c1["p50_ms"] / ceilings["add_sub C=1"]["p50_ms"]
        check(f"{ours} add_sub C=1 p50 <= 1.3x ceiling", r, r <= 1.3)
    big = rows.get(("identity_4m C=4", ours))
    if big:
        sync = rows.get(("identity_4m C=4", "ceiling-sync"))
        if sync:
            r = big["mib_per_s"] / sync["mib_per_s"]
            check(f"{ours} identity_4m C=4 MiB/s >= 0.9x ceiling-sync", r, r >= 0.9)
        theirs = rows.get(("identity_4m C=4", "kserve"))
        if theirs:
            r = big["mib_per_s"] / theirs["mib_per_s"]
            check(f"{ours} identity_4m C=4 MiB/s >= 3x kserve", r, r >= 3)
    return out


def codec_ratios(rows: dict, workload_order: list[str]) -> list[str]:
    lines = []
    for workload in workload_order:
        for loop in ("sync", "aio"):
            fast, slow = rows.get((workload, f"ours-{loop}-cython")), rows.get(
                (workload, f"ours-{loop}-python"))
            if fast and slow and slow["infer_per_s"]:
                lines.append(f"- {workload}, {loop}: cython / python infer/s = "
                             f"{fast['infer_per_s'] / slow['infer_per_s']:.2f}, CPU/infer = "
                             f"{fast['cpu_ms_per_infer'] / slow['cpu_ms_per_infer']:.2f}")
    return lines


def request_path_targets(rows: dict, codec: str) -> list[str]:
    """The asynchronous request path's targets: no unary regression against the checkout
    given with --before (its better loop), and streams at least as fast as unary calls."""
    out = []
    ceilings = best_ceilings(rows)
    ours = f"ours-aio-{codec}"
    now = rows.get(("add_sub C=16", ours))
    ceiling = ceilings.get("add_sub C=16")
    befores = [row for (w, name), row in rows.items()
               if w == "add_sub C=16" and name.startswith("before-")]
    if now and ceiling and befores:
        best = max(befores, key=lambda r: r["infer_per_s"])
        r_now, r_before = (now["infer_per_s"] / ceiling["infer_per_s"],
                           best["infer_per_s"] / ceiling["infer_per_s"])
        c_now, c_before = (now["cpu_ms_per_infer"] / ceiling["cpu_ms_per_infer"],
                           best["cpu_ms_per_infer"] / ceiling["cpu_ms_per_infer"])
        out.append(f"- add_sub C=16 infer/s vs ceiling: {r_now:.2f}x now, {r_before:.2f}x before "
                   f"-> {'met' if r_now >= r_before else 'NOT met'}")
        out.append(f"- add_sub C=16 CPU/infer vs ceiling: {c_now:.2f}x now, {c_before:.2f}x before "
                   f"-> {'met' if c_now <= c_before else 'NOT met'}")
    stream = rows.get(("add_sub stream C=16", ours))
    for label in ("add_sub aio-unary C=16", "add_sub C=16"):
        unary = rows.get((label, ours))
        if stream and unary:
            r = stream["infer_per_s"] / unary["infer_per_s"]
            out.append(f"- stream C=16 / {label} infer/s: {r:.2f} -> {'met' if r >= 1 else 'NOT met'}"
                       f" (CPU/infer {stream['cpu_ms_per_infer']:.3f} vs "
                       f"{unary['cpu_ms_per_infer']:.3f} ms)")
    return out


def targets(rows: dict, rss: dict, codec: str) -> list[str]:
    ceilings = best_ceilings(rows)
    out = []

    def check(label, value, ok):
        out.append(f"- {label}: {value} -> {'met' if ok else 'NOT met'}")

    for loop in ("sync", "aio"):
        name = f"ours-{loop}-{codec}"
        c16, c1, big = (rows.get((w, name)) for w in ("add_sub C=16", "add_sub C=1",
                                                       "identity_4m C=4"))
        if c16 and "add_sub C=16" in ceilings:
            ceil = ceilings["add_sub C=16"]
            r = c16["infer_per_s"] / ceil["infer_per_s"]
            check(f"{name} add_sub C=16 infer/s >= 0.95x ceiling", f"{r:.2f}x", r >= 0.95)
            r = c16["cpu_ms_per_infer"] / ceil["cpu_ms_per_infer"]
            check(f"{name} add_sub C=16 CPU/infer <= 1.1x ceiling", f"{r:.2f}x", r <= 1.1)
        if c1 and "add_sub C=1" in ceilings:
            r = c1["p50_ms"] / ceilings["add_sub C=1"]["p50_ms"]
            check(f"{name} add_sub C=1 p50 <= 1.15x ceiling", f"{r:.2f}x", r <= 1.15)
        if big and "identity_4m C=4" in ceilings:
            r = big["mib_per_s"] / ceilings["identity_4m C=4"]["mib_per_s"]
            check(f"{name} identity_4m C=4 MiB/s >= 0.9x ceiling", f"{r:.2f}x", r >= 0.9)
        python = rows.get(("add_sub C=16", f"ours-{loop}-python"))
        if c16 and python and codec == "cython":
            r = c16["infer_per_s"] / python["infer_per_s"]
            check(f"{name} add_sub C=16 codec >= 2x protobuf path", f"{r:.2f}x", r >= 2)
    for name, (before, middle, after, count) in rss.items():
        growth = (after - before) / MIB
        check(f"{name} RSS growth <= 5 MB over {count:,} add_sub requests",
              f"{before / MIB:.1f} -> {middle / MIB:.1f} -> {after / MIB:.1f} MiB "
              f"({growth:+.1f} MiB)", after - before <= 5e6)
    return out


# -- main --------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Benchmark our server against bare grpcio.")
    p.add_argument("--quick", action="store_true", help="1-2 minute run (1 s per measurement)")
    p.add_argument("--seconds", type=float, help="seconds per measurement (default 2, quick 1)")
    p.add_argument("--repeats", type=int,
                   help="interleaved repeats, medians reported (default 5, quick 3)")
    p.add_argument("--rss", type=int, help="requests for the RSS check (default 200000, "
                                           "quick 20000; 0 skips it)")
    p.add_argument("--servers", help="comma-separated subset of server names")
    p.add_argument("--workloads", help="comma-separated subset, e.g. 'add_sub C=16'")
    p.add_argument("--before", type=Path, metavar="CHECKOUT",
                   help="also run the server of this checkout (before-sync/aio-cython), "
                        "e.g. a clone of main without the change under test")
    p.add_argument("--peers", default="",
                   help="comma-separated peer servers in their own venvs: kserve,mlserver "
                        "(grpc_peers.py; the venvs are made on first use)")
    p.add_argument("--workers", default="",
                   help="also run ours with --workers N for each N listed, e.g. '2'")
    p.add_argument("--loadgen", choices=["auto", "h2load", "aio"], default="auto")
    p.add_argument("--json", type=Path, help="where to write raw results")
    args = p.parse_args(argv)
    args.seconds = args.seconds or (1.0 if args.quick else 2.0)
    args.repeats = args.repeats or (3 if args.quick else 5)
    if args.rss is None:
        args.rss = 20_000 if args.quick else 200_000
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    use_h2load = args.loadgen == "h2load" or (args.loadgen == "auto" and loadgen.have_h2load())
    if not use_h2load:
        print("note: h2load not found (apt-get install nghttp2-client); using the grpc.aio "
              "load generator (2 processes) instead, which checks every status itself",
              file=sys.stderr)
    try:
        import triton_grpc_server._ext.wire  # noqa: F401
        codecs = ["cython", "python"]
    except ImportError as exc:
        print(f"note: Cython codec not built ({exc}); benchmarking the python codec only",
              file=sys.stderr)
        codecs = ["python"]
    peers = [p for p in args.peers.split(",") if p]
    specs = server_specs(codecs, args.before, peers,
                         [int(n) for n in args.workers.split(",") if n])
    if args.servers:
        wanted = set(args.servers.split(","))
        specs = [s for s in specs if s.name in wanted or s.is_ceiling]
    info = machine()
    started = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tgs-bench-") as tmpdir:
        tmp = Path(tmpdir)
        models = workloads.write_repository(tmp / "repo")
        all_workloads = [workloads.Workload(models["add_sub"], c) for c in (1, 4, 16)] + [
            workloads.Workload(models["identity_4m"], 4)] + [
            workloads.Workload(models["add_sub"], 16, mode) for mode in ("unary-aio", "stream")]
        if args.workloads:
            wanted = set(args.workloads.split(","))
            all_workloads = [w for w in all_workloads if w.label in wanted]
        bench = Bench(tmp, models, use_h2load)
        servers = [Server(spec, tmp / "repo", tmp) for spec in specs]
        samples, checks, rss = [], {}, {}
        try:
            probe = (tmp / "add_sub.message").read_bytes()
            for server in servers:
                server.wait_ready(probe)
                server.measure_frames({name: (tmp / f"{name}.message").read_bytes()
                                       for name in models})
            for server in servers:  # outputs through tritonclient, before any load
                for name, model in models.items():
                    checks[(server.spec.name, name)] = loadgen.check_outputs(
                        server.port, model, 100 if name == "add_sub" else 4)
            print(f"# {len(servers)} servers x {len(all_workloads)} workloads x "
                  f"{args.repeats} repeats, {args.seconds:g} s each", file=sys.stderr)
            guesses = {}
            for repeat in range(args.repeats):
                for workload in all_workloads:
                    shift = repeat % len(servers)
                    for server in servers[shift:] + servers[:shift]:
                        if workload.mode == "stream" and not server.spec.streams:
                            continue
                        if server.spec.is_peer and workload.mode != "unary":
                            continue  # the peers' unary ModelInfer only
                        key = (server.spec.name, workload.label)
                        sample = bench.measure(server, workload, repeat, args.seconds,
                                               guesses.get(key, 0.0))
                        guesses[key] = sample.infer_per_s
                        samples.append(sample)
                        print(f"  r{repeat} {workload.label:16} {server.spec.name:24} "
                              f"{sample.infer_per_s:9,.0f}/s p50 {sample.p50_ms:.3f} ms "
                              f"cpu {sample.cpu_ms_per_infer:.3f} ms "
                              f"faults {sample.faults_per_infer:,.0f} err {sample.errors} "
                              f"others {sample.other_cores:.2f}",
                              file=sys.stderr)
            if args.rss:
                for server in servers:
                    if server.spec.name in ("ours-sync-cython", "ours-aio-cython") or (
                            codecs == ["python"] and server.spec.name.endswith("-python")):
                        half = args.rss // 2
                        before = server.rss_bytes()
                        bench.load(server, "add_sub", 16, half)
                        middle = server.rss_bytes()
                        bench.load(server, "add_sub", 16, args.rss - half)
                        rss[server.spec.name] = (before, middle, server.rss_bytes(), args.rss)
        finally:
            for server in servers:
                server.stop()

    rows = median_rows(samples)
    workload_order = [w.label for w in all_workloads]
    server_order = [s.name for s in specs]
    load_after = os.getloadavg()
    command = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"\n## {started:%Y-%m-%d %H:%M} UTC: `{command.strip()}`\n")
    print(f"Machine: {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}, Python "
          f"{info['python']}, grpcio {info['grpcio']}, {info['h2load']}; load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after. Load generator: "
          f"{'h2load -t1 -c C -m1 (C connections, one stream each)' if use_h2load else 'grpc.aio, 2 processes'}; "
          f"medians of {args.repeats} interleaved repeats of {args.seconds:g} s; * = the better "
          f"ceiling, which the ratios divide by; CPU = the server process's utime+stime per "
          f"inference; others' CPU = cores busy outside the server and the load generator "
          f"during the measurement (other users; a noise gauge).\n")
    print(table(rows, workload_order, server_order))
    bad = {k: v for k, v in checks.items() if v[1]}
    print(f"\nOutputs checked through tritonclient: "
          f"{sum(g for g, _ in checks.values()):,} correct, "
          f"{sum(b for _, b in checks.values())} wrong or failed"
          + (f" ({bad})" if bad else "") + "; the errors column counts load-generator "
          f"requests without a complete OK response.\n")
    ratios = codec_ratios(rows, workload_order)
    if ratios:
        print("Codec (ours, Cython vs protobuf):\n" + "\n".join(ratios) + "\n")
    print("Targets (issue 3):\n" + "\n".join(targets(rows, rss, codecs[0])))
    path_targets = request_path_targets(rows, codecs[0])
    if path_targets:
        print("\nTargets (the asynchronous request path):\n" + "\n".join(path_targets))
    ours_main = f"ours-aio-{codecs[0]}"
    ratios = peer_ratios(rows, workload_order, ours_main, peers)
    if ratios:
        print("\nOurs against the peers (same run):\n" + "\n".join(ratios))
    print("\nTargets (small requests, peers):\n" + "\n".join(peer_targets(rows, ours_main)))
    steal = [s.steal_cores for s in samples]
    others = [s.other_cores for s in samples]
    if samples:
        print(f"\nNoise over all samples: others' CPU median {statistics.median(others):.2f} "
              f"cores (max {max(others):.2f}), steal median {statistics.median(steal):.2f} "
              f"cores (max {max(steal):.2f}), load average {load_before[0]:.2f} -> "
              f"{load_after[0]:.2f}")
    print("\nIn-process cost of one ModelInfer (benchmarks/breakdown.py; wall time, one thread):\n")
    print(breakdown.table(breakdown.breakdown()))

    out = args.json or ROOT / ".bench" / f"results-{started:%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": command.strip(), "started": started.isoformat(), "machine": info,
        "loadavg": [load_before, load_after], "samples": [dataclasses.asdict(s) for s in samples],
        "medians": [dict(workload=w, server=s, **r) for (w, s), r in rows.items()],
        "checks": [dict(server=s, model=m, good=g, bad=b) for (s, m), (g, b) in checks.items()],
        "rss": rss}, indent=1))
    print(f"\nraw results: {out}", file=sys.stderr)
    failures = sum(r["errors"] for r in rows.values()) + sum(b for _, b in checks.values())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
