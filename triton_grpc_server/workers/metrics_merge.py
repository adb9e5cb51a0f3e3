"""The supervisor's one ``/metrics`` endpoint: every worker's exposition, added up.

Each worker serves its own registry on a private port; a scrape here reads all of
them and sums samples with the same name and labels, so ``nv_inference_count``
and friends count the whole server. Figures of one shared thing rather than of a
process (GPU gauges, summary quantiles) take the largest value instead of the sum.
``GET /workers`` lists the workers (pid, restarts, addresses) as JSON.
"""
from __future__ import annotations

import json
import logging
import threading
import urllib.request

log = logging.getLogger("triton_grpc_server.workers")

SCRAPE_TIMEOUT_S = 5.0
_TYPES = {"unknown": "untyped"}


def _not_summed(family_name: str, labels: dict) -> bool:
    return family_name.startswith("nv_gpu_") or "quantile" in labels


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def merge_expositions(texts) -> str:
    """Prometheus text expositions -> one, samples of equal name and labels combined."""
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, list] = {}   # name -> [type, help, {(sample, labels): value}]
    for text in texts:
        for family in text_string_to_metric_families(text):
            entry = families.setdefault(family.name, [family.type, family.documentation, {}])
            values = entry[2]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in values:
                    values[key] = sample.value
                elif _not_summed(family.name, sample.labels):
                    values[key] = max(values[key], sample.value)
                else:
                    values[key] += sample.value
    lines = []
    for name, (kind, documentation, values) in families.items():
        lines.append(f"# HELP {name} {documentation}")
        lines.append(f"# TYPE {name} {_TYPES.get(kind, kind)}")
        for (sample_name, labels), value in values.items():
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            shown = int(value) if float(value).is_integer() else value
            lines.append(f"{sample_name}{{{label_text}}} {shown}" if labels
                         else f"{sample_name} {shown}")
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
