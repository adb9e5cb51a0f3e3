"""``--workers N``: N server processes on the same ports, and the process that minds them.

The supervisor loads no model and serves no inference. It starts N copies of
this command line as workers (``--workers 1``, SO_REUSEPORT on the gRPC and HTTP
ports, each with a loopback coordination address and a private metrics port),
watches them, starts a replacement for one that dies, serves the one Prometheus
endpoint (every worker's figures added up, ``metrics_merge.py``) and, on SIGTERM or
SIGINT, passes the signal on and waits for every worker to drain.

Each worker serves the whole repository in its own process: memory is N times one
server's (docs/workers.md says when that is the right trade).
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Optional

from .coordination import ping

log = logging.getLogger("triton_grpc_server.workers")

POLL_S = 0.2
# A worker that dies this soon after it started, this many times in a row, is not
# restarted again: the supervisor stops (a broken repository or a port in use).
QUICK_DEATH_S = 10.0
QUICK_DEATHS = 3


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Worker:
    def __init__(self, index: int, peer_address: str, metrics_port: int):
        self.index = index
        self.peer_address = peer_address
        self.metrics_port = metrics_port
        self.process: Optional[subprocess.Popen] = None
        self.started_at = 0.0
        self.restarts = 0
        self.quick_deaths = 0

    def start(self, argv: list[str], peers: str, restart: bool) -> None:
        env = dict(os.environ, TGS_WORKER_INDEX=str(self.index), TGS_WORKER_PEERS=peers,
                   TGS_WORKER_RESTART="1" if restart else "0")
        # Later flags win in argparse: the worker is one process with the ports shared.
        command = [sys.executable, "-m", "triton_grpc_server", *argv, "--workers", "1",
                   "--reuse-grpc-port", "true", "--reuse-http-port", "true",
                   "--metrics-port", str(self.metrics_port)]
        self.process = subprocess.Popen(command, env=env)
        self.started_at = time.monotonic()
        log.info("worker %d: pid %d", self.index, self.process.pid)

    def describe(self) -> dict:
        alive = self.process is not None and self.process.poll() is None
        return {"index": self.index, "pid": self.process.pid if self.process else None,
                "alive": alive, "restarts": self.restarts,
                "coordination": self.peer_address, "metrics_port": self.metrics_port}


class Supervisor:
    def __init__(self, argv: list[str], settings):
        self.argv = argv
        self.settings = settings
        count = settings.workers
        self.workers = [Worker(i, f"127.0.0.1:{_free_loopback_port()}", _free_loopback_port())
                        for i in range(count)]
        self.peers = ",".join(w.peer_address for w in self.workers)
        self.stopping = threading.Event()
        self.metrics = None

    def start(self) -> int:
        """Start every worker and wait until each answers; an exit status if one can't start."""
        for worker in self.workers:
            worker.start(self.argv, self.peers, restart=False)
        waiting = set(range(len(self.workers)))
        while waiting:
            if self.stopping.is_set():
                return 0
            for index in sorted(waiting):
                worker = self.workers[index]
                code = worker.process.poll()
                if code is not None:
                    print(f"error: worker {index} exited with status {code} while starting",
                          file=sys.stderr)
                    return code or 1
                if ping(worker.peer_address, timeout=0.5) is not None:
                    waiting.discard(index)
            time.sleep(POLL_S)
        log.info("%d workers serving", len(self.workers))
        if self.settings.allow_metrics:
            from .metrics_merge import MergedMetricsServer

            from ..metrics import metrics_address

            self.metrics = MergedMetricsServer(self)
            self.metrics.start(metrics_address(self.settings), self.settings.metrics_port)
        return 0

    def watch(self) -> int:
        """Replace workers that die until told to stop; an exit status if one keeps dying."""
        while not self.stopping.wait(POLL_S):
            for worker in self.workers:
                code = worker.process.poll()
                if code is None or self.stopping.is_set():
                    continue
                lived = time.monotonic() - worker.started_at
                worker.quick_deaths = worker.quick_deaths + 1 if lived < QUICK_DEATH_S else 0
                if worker.quick_deaths >= QUICK_DEATHS:
                    print(f"error: worker {worker.index} keeps exiting (status {code}); stopping",
                          file=sys.stderr)
                    return 1
                log.warning("worker %d (pid %d) exited with status %s; starting a new one",
                            worker.index, worker.process.pid, code)
                worker.restarts += 1
                worker.start(self.argv, self.peers, restart=True)
        return 0

    def stop(self, timeout: float) -> None:
        """SIGTERM to every worker (each drains its in-flight requests), then wait; kill late ones."""
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            if worker.process is None:
                continue
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop in time; killing it", worker.index)
                worker.process.kill()
                worker.process.wait()
        if self.metrics is not None:
            self.metrics.stop()


def supervise(argv: list[str], settings) -> int:
    from ..server import check_repository

    problem = check_repository(settings)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    supervisor = Supervisor(argv, settings)

    def on_signal(signum, frame):
        supervisor.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        code = supervisor.start()
        if code == 0:
            code = supervisor.watch()
    finally:
        # Workers get the exit timeout to drain, and a few seconds to close.
        supervisor.stop(settings.exit_timeout_secs + 10.0)
    log.info("stopped")
    return code
