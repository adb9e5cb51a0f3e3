"""REST benchmark: our HTTP frontend (uvicorn+httptools, and granian on the same app) against
KServe 0.21 and MLServer 1.7.1, in one invocation, printing medians and ratios.

Workloads (docs/performance.md has the figures):

* ``add_sub`` JSON at C=16: infer/s (targets: >= 1.5x KServe, >= 2x MLServer);
* ``identity_4m`` (FP32 [1,1048576]) at C=4 with Triton's binary tensor extension:
  MiB/s of tensor data each way (target: >= 3x KServe). MLServer has no binary
  extension, so it gets the same tensor as JSON.

Load comes from nghttp2's ``h2load --h1`` (C connections, one request in flight each),
replaying one pre-encoded body; every response must be 2xx and one response per server is
checked against the expected arrays first. Rounds alternate servers so that machine noise
spreads over all of them; ``server CPU/inf`` is the server process tree's CPU time per
response.

    python benchmarks/http_bench.py [--seconds 5] [--repeat 2] [--servers ours,kserve,...]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import http_peers  # noqa: E402
import workloads  # noqa: E402

SERVERS = ["ours", "ours-granian", "kserve", "mlserver"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- request bodies ---------------------------------------------------------------------------
def json_body(model: workloads.Model) -> bytes:
    return json.dumps({
        "inputs": [{"name": n, "shape": list(a.shape), "datatype": model.datatype,
                    "data": a.ravel().tolist()} for n, a in model.inputs.items()],
        "outputs": [{"name": n} for n in model.outputs]}).encode()


def binary_body(model: workloads.Model) -> tuple[bytes, int]:
    header = json.dumps({
        "inputs": [{"name": n, "shape": list(a.shape), "datatype": model.datatype,
                    "parameters": {"binary_data_size": a.nbytes}} for n, a in model.inputs.items()],
        "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in model.outputs]}).encode()
    return header + b"".join(a.tobytes() for a in model.inputs.values()), len(header)


def decode_outputs(headers: dict, body: bytes) -> dict:
    """Outputs of a v2 REST response, JSON or binary, as numpy arrays."""
    size = int(headers.get("inference-header-content-length", len(body)))
    document = json.loads(body[:size])
    offset, arrays = size, {}
    for out in document["outputs"]:
        dtype = {"INT32": np.int32, "FP32": np.float32}[out["datatype"]]
        params = out.get("parameters") or {}
        if "binary_data_size" in params:
            n = params["binary_data_size"]
            arrays[out["name"]] = np.frombuffer(body[offset:offset + n], dtype).reshape(out["shape"])
            offset += n
        else:
            arrays[out["name"]] = np.array(out["data"], dtype).reshape(out["shape"])
    return arrays


# -- servers ----------------------------------------------------------------------------------
class Server:
    def __init__(self, name: str, repo: Path, tmp: Path):
        self.name = name
        self.port = free_port()
        grpc_port = free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        cwd = str(ROOT)
        if name == "ours":
            cmd = [sys.executable, "-m", "triton_grpc_server", "--model-repository", str(repo),
                   "--http-address", "127.0.0.1", "--http-port", str(self.port),
                   "--grpc-address", "127.0.0.1", "--grpc-port", str(grpc_port),
                   "--allow-metrics", "false", "--disable-auto-complete-config",
                   "--log-info", "false"]
        elif name == "ours-granian":
            cmd = [sys.executable, str(HERE / "http_granian.py"), "--model-repository",
                   str(repo), "--http-port", str(self.port)]
        else:
            cmd = http_peers.PEERS[name](tmp, self.port, grpc_port)
            cwd = str(tmp / "mlserver") if name == "mlserver" else str(tmp)
        self.log_path = tmp / f"{name}.log"
        self.process = subprocess.Popen(cmd, stdout=open(self.log_path, "wb"),
                                        stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                        start_new_session=True)

    def request(self, path: str, body: bytes = None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("POST" if body is not None else "GET", path, body=body,
                         headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def wait_ready(self, models, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if all(self.request(f"/v2/models/{m}/ready")[0] == 200 for m in models):
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready after {timeout}s")

    def cpu_seconds(self) -> float:
        """CPU time of the server's process tree (MLServer runs inference in a child)."""
        pids = _tree(self.process.pid)
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (OSError, IndexError):
                pass
        return total / CLK_TCK

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


# -- load -------------------------------------------------------------------------------------
def h2load(port: int, path: str, body_file: Path, headers: dict, concurrency: int,
           seconds: float, count: int = 0) -> tuple[float, int]:
    """``(responses/s, failed or non-2xx responses)`` for one timed run (or ``count``
    requests, for servers too slow to finish any inside the window)."""
    cmd = ["h2load", "--h1", "-c", str(concurrency), "-m", "1", "-d", str(body_file)]
    cmd += ["-n", str(count)] if count else ["-D", str(int(seconds)), "--warm-up-time", "1"]
    for key, value in headers.items():
        cmd += ["-H", f"{key}: {value}"]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 300)
    out = run.stdout
    finished = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    counts = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    if not (finished and codes and counts):
        raise RuntimeError(f"unexpected h2load output:\n{out}\n{run.stderr}")
    bad = sum(int(g) for g in codes.groups()[1:]) + sum(int(g) for g in counts.groups()[1:])
    # req/s counts the main duration only (the warm-up is excluded)
    return float(finished.group(2)), bad


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--workloads", default="add_sub,identity_4m")
    parser.add_argument("--json", type=Path, help="also write the medians here (benchmarks/plot.py)")
    args = parser.parse_args(argv)
    run_started = time.gmtime()
    if shutil.which("h2load") is None:
        print("h2load (nghttp2-client) is required", file=sys.stderr)
        return 2
    names = args.servers.split(",")
    if "ours-granian" in names:
        import importlib.util

        if importlib.util.find_spec("granian") is None:
            print("# ours-granian skipped: pip install granian to compare the library")
            names.remove("ours-granian")
    tmp = Path(tempfile.mkdtemp(prefix="http-bench-"))
    repo = tmp / "models"
    models = workloads.write_repository(repo)
    plans = []  # (workload label, model, concurrency, unit)
    if "add_sub" in args.workloads:
        plans.append(("add_sub JSON C=16", models["add_sub"], 16, "infer/s"))
    if "identity_4m" in args.workloads:
        plans.append(("identity_4m binary C=4", models["identity_4m"], 4, "MiB/s"))

    servers = {}
    try:
        for name in names:
            servers[name] = Server(name, repo, tmp)
        for server in servers.values():
            server.wait_ready(list(models))
        results: dict = {}
        for label, model, concurrency, unit in plans:
            bodies = {}
            for name, server in servers.items():
                use_json = model.name == "add_sub" or name == "mlserver"  # no binary extension
                if use_json:
                    body, headers = json_body(model), {"Content-Type": "application/json"}
                else:
                    body, size = binary_body(model)
                    headers = {"Content-Type": "application/octet-stream",
                               "Inference-Header-Content-Length": str(size)}
                status, rheaders, rbody = server.request(f"/v2/models/{model.name}/infer",
                                                         body, headers)
                assert status == 200, (name, status, rbody[:300])
                got = decode_outputs(rheaders, rbody)
                for out, expected in model.outputs.items():
                    np.testing.assert_array_equal(got[out].reshape(expected.shape), expected)
                path = tmp / f"{name}-{model.name}.body"
                path.write_bytes(body)
                bodies[name] = (path, headers, "JSON" if use_json and model.name != "add_sub"
                                else "")
            for _ in range(args.repeat):
                for name, server in servers.items():
                    path, headers, note = bodies[name]
                    cpu0 = server.cpu_seconds()
                    started = time.monotonic()
                    rate, bad = h2load(server.port, f"/v2/models/{model.name}/infer",
                                       path, headers, concurrency, args.seconds)
                    if rate * args.seconds < 2 * concurrency:  # too few to measure: count them
                        rate, bad = h2load(server.port, f"/v2/models/{model.name}/infer",
                                           path, headers, concurrency, args.seconds,
                                           count=2 * concurrency)
                    cpu = server.cpu_seconds() - cpu0
                    # CPU over the whole run (warm-up included) per response in that time
                    ok = rate * (time.monotonic() - started)
                    value = rate if unit == "infer/s" else rate * model.payload_bytes / 2**20
                    row = results.setdefault((label, name), {"values": [], "cpu": [], "bad": 0,
                                                             "note": note, "rates": []})
                    row["values"].append(value)
                    row["rates"].append(rate)
                    row["cpu"].append(cpu / max(ok, 1) * 1e6)
                    row["bad"] += bad
        report(results, plans, names)
        if args.json:
            write_json(args.json, results, run_started, argv)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def cpu_name() -> str:
    with open("/proc/cpuinfo") as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    return names[0] if names else platform.machine()


def write_json(path: Path, results: dict, started, argv) -> None:
    """The medians in benchmarks/run.py's layout, so benchmarks/plot.py draws them too."""
    medians = [{"workload": label, "server": name,
                "infer_per_s": statistics.median(row["rates"]),
                "cpu_ms_per_infer": statistics.median(row["cpu"]) / 1000.0,
                "errors": row["bad"], "repeats": len(row["values"])}
               for (label, name), row in results.items()]
    command = "python benchmarks/http_bench.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "command": command.strip(), "started": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", started),
        "machine": {"cores": os.cpu_count(), "cpu": cpu_name()},
        "loadavg": os.getloadavg(), "medians": medians}, indent=1))


def report(results, plans, names) -> None:
    print(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, "
          f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f} (shared box: steer by ratios)")
    print(f"{'workload':<24} {'server':<14} {'median':>10} {'runs':>24} {'server CPU/inf':>15} "
          f"{'errors':>6}")
    for label, _, _, unit in plans:
        for name in names:
            row = results.get((label, name))
            if row is None:
                continue
            runs = ", ".join(f"{v:.0f}" for v in row["values"])
            note = f" ({row['note']})" if row["note"] else ""
            print(f"{label:<24} {name + note:<14} {statistics.median(row['values']):>8.0f} "
                  f"{unit[:5]:<5} [{runs}]".ljust(82)
                  + f"{statistics.median(row['cpu']):>10.0f} us {row['bad']:>6}")
    print()
    targets = [("add_sub JSON C=16", "kserve", 1.5), ("add_sub JSON C=16", "mlserver", 2.0),
               ("identity_4m binary C=4", "kserve", 3.0)]
    for label, peer, target in targets:
        ours, theirs = results.get((label, "ours")), results.get((label, peer))
        if ours and theirs:
            base = statistics.median(theirs["values"])
            if base <= 0:
                print(f"{label}: {peer} completed no request inside the timed window")
                continue
            ratio = statistics.median(ours["values"]) / base
            verdict = "met" if ratio >= target else "MISSED"
            print(f"{label}: ours / {peer} = {ratio:.2f}x (target >= {target}x: {verdict})")
    for label, _, _, _ in plans:
        a, b = results.get((label, "ours")), results.get((label, "ours-granian"))
        if a and b:
            print(f"{label}: uvicorn+httptools / granian = "
                  f"{statistics.median(a['values']) / statistics.median(b['values']):.2f}x "
                  f"throughput, {statistics.median(a['cpu']) / statistics.median(b['cpu']):.2f}x "
                  "server CPU per inference")


if __name__ == "__main__":
    sys.exit(main())
