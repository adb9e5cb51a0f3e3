"""Fixtures: a real server process on a free loopback port.

``start_server(repo, *args)`` launches ``python -m triton_grpc_server`` as a
subprocess and waits until it answers ServerLive; the returned handle has
``url`` ("127.0.0.1:PORT"), ``port``, ``process``, ``client()`` and ``stop()``;
``http_url``/``http_port``/``http_client()`` reach its HTTP/REST frontend.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def metrics_flags(args) -> list[str]:
    """A free --metrics-port unless the test chose one (or turned metrics off): a busy
    metrics port stops a server at start-up, so servers started by tests must not share 8002."""
    given = [str(a).split("=", 1)[0] for a in args]
    if "--metrics-port" in given or "--allow-metrics" in given:
        return []
    return ["--metrics-address", "127.0.0.1", "--metrics-port", str(free_port())]


class ServerHandle:
    # A port free_port() found can be taken by another process before the server binds it
    # (parallel test runs); a start that fails on a busy port is retried on fresh ports.
    BIND_RETRIES = 3

    def __init__(self, repo, args=(), env=None, wait_ready=True, timeout=60.0, preexec_fn=None):
        self._repo, self._args, self._env = repo, args, env
        self._preexec_fn = preexec_fn  # run in the child before exec (e.g. resource limits)
        for attempt in range(self.BIND_RETRIES):
            self._launch()
            if not wait_ready:
                return
            try:
                self.wait_live(timeout)
                return
            except RuntimeError:
                log = self.log() if self.process.poll() is not None else ""
                lost_port = "failed to bind" in log or "already in use" in log
                if not lost_port or attempt == self.BIND_RETRIES - 1:
                    raise
                self._log.close()

    def _launch(self) -> None:
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.http_port = free_port()
        self.http_url = f"127.0.0.1:{self.http_port}"
        args = self._args
        cmd = [sys.executable, "-m", "triton_grpc_server", "--model-repository", str(self._repo),
               "--grpc-address", "127.0.0.1", "--grpc-port", str(self.port),
               "--http-address", "127.0.0.1", "--http-port", str(self.http_port),
               *metrics_flags(args), *map(str, args)]
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env.update(self._env or {})
        # Logs go to the temp dir, never next to a repository inside the checkout.
        self.log_path = Path(tempfile.gettempdir()) / f"tgs-server-{self.port}-{os.getpid()}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=full_env, cwd=str(ROOT),
                                        preexec_fn=self._preexec_fn)

    def wait_live(self, timeout: float) -> None:
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + timeout
        client = grpcclient.InferenceServerClient(self.url)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
                try:
                    if client.is_server_live():
                        return
                except Exception:
                    pass
                time.sleep(0.1)
        finally:
            client.close()
        raise RuntimeError(f"server not live after {timeout}s:\n{self.log()}")

    def client(self, **kwargs):
        import tritonclient.grpc as grpcclient

        return grpcclient.InferenceServerClient(self.url, **kwargs)

    def http_client(self, **kwargs):
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(self.http_url, **kwargs)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@pytest.fixture
def start_server(tmp_path):
    """Factory fixture: ``start_server(repo, *flags)``; every server is stopped at teardown."""
    handles = []

    def _start(repo, *args, **kwargs):
        handle = ServerHandle(repo, args, **kwargs)
        handles.append(handle)
        return handle

    yield _start
    for handle in handles:
        handle.stop()
