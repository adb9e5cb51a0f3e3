"""The supervisor's one ``/metrics`` endpoint: every worker's exposition, added up.

Each worker serves its own registry on a private port; a scrape here reads all of
them and sums samples with the same name and labels, so ``nv_inference_count``
and friends count the whole server. Figures of one shared thing rather than of a
process (GPU and machine gauges, summary quantiles) take the largest value instead.
``GET /workers`` lists the workers (pid, restarts, addresses) as JSON.
"""
from __future__ import annotations

import json
import logging
import threading
import urllib.request

log = logging.getLogger("triton_grpc_server.workers")

SCRAPE_TIMEOUT_S = 5.0
# Gauges that count something of each process (summed); every other gauge describes
# the machine or a device that all workers see alike (the largest value is kept).
_PER_PROCESS_GAUGES = ("nv_inference_pending_request_count", "nv_pinned_memory_pool_")


def _summed(family: str, kind: str, labels: str) -> bool:
    if "quantile=" in labels:
        return False  # quantiles do not add up
    if kind == "gauge":
        return family.startswith(_PER_PROCESS_GAUGES)
    return not family.startswith("nv_gpu_")


def merge_expositions(texts) -> str:
    """Prometheus text expositions of equal layout -> one, equal samples combined.

    Read line by line rather than through a parser so sample names stay exactly as
    the workers wrote them (Triton's counters have no ``_total`` suffix).
    """
    order: list[str] = []                 # families, first-seen order
    headers: dict[str, list[str]] = {}    # family -> its HELP/TYPE lines
    kinds: dict[str, str] = {}
    samples: dict[str, dict] = {}         # family -> {(name, labels): value}
    for text in texts:
        family = ""
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    if family not in headers:
                        headers[family] = []
                        order.append(family)
                        samples[family] = {}
                    if line not in headers[family]:
                        headers[family].append(line)
                    if parts[1] == "TYPE" and len(parts) == 4:
                        kinds[family] = parts[3].strip()
                continue
            head, _, value_text = line.rpartition(" ")
            try:
                value = float(value_text)
            except ValueError:
                continue
            name, brace, rest = head.partition("{")
            labels = brace + rest
            if family not in samples:  # a sample without HELP/TYPE lines
                family = name
                headers.setdefault(family, [])
                samples.setdefault(family, {})
                if family not in order:
                    order.append(family)
            key = (name, labels)
            values = samples[family]
            if key not in values:
                values[key] = value
            elif _summed(family, kinds.get(family, "untyped"), labels):
                values[key] += value
            else:
                values[key] = max(values[key], value)
    lines = []
    for family in order:
        lines.extend(headers[family])
        for (name, labels), value in samples[family].items():
            shown = int(value) if value.is_integer() else value
            lines.append(f"{name}{labels} {shown}")
    return "\n".join(lines) + "\n"


class MergedMetricsServer:
    def __init__(self, supervisor):
        self.supervisor = supervisor
        from ..metrics import metrics_address

        address = metrics_address(supervisor.settings)
        self._worker_host = "127.0.0.1" if address in ("0.0.0.0", "::", "") else address
        self._httpd = None

    def scrape(self) -> str:
        texts = []
        for worker in self.supervisor.workers:
            url = f"http://{self._worker_host}:{worker.metrics_port}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as answer:
                    texts.append(answer.read().decode("utf-8"))
            except OSError as exc:  # a worker being replaced: the others still count
                log.warning("worker %d metrics not read: %s", worker.index, exc)
        return merge_expositions(texts)

    def _app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/workers":
            body = json.dumps([w.describe() for w in self.supervisor.workers]).encode()
            content_type = "application/json"
        else:
            from prometheus_client import CONTENT_TYPE_LATEST

            body = self.scrape().encode("utf-8")
            content_type = CONTENT_TYPE_LATEST
        start_response("200 OK", [("Content-Type", content_type),
                                  ("Content-Length", str(len(body)))])
        return [body]

    def start(self, address: str, port: int) -> bool:
        import socketserver
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        class Server(socketserver.ThreadingMixIn, WSGIServer):
            daemon_threads = True

        class QuietHandler(WSGIRequestHandler):
            def log_message(self, *args):
                pass

        try:
            self._httpd = make_server(address, port, self._app, Server, QuietHandler)
        except OSError as exc:
            log.warning("failed to start metrics service on %s:%d: %s", address, port, exc)
            return False
        threading.Thread(target=self._httpd.serve_forever, daemon=True,
                         name="metrics-http").start()
        log.info("Started Metrics Service at %s:%d (all workers)", address, port)
        return True

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
