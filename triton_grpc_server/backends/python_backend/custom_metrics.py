"""Metrics Python models define (``pb_utils.MetricFamily``), kept in the server process.

Instances of a model (each its own process) that create a family of the same
name, kind and description share it, and a metric with the same labels is the
same metric, as in Triton. A family lives while an instance that created it
lives. They are exposed on the server's metrics endpoint in the Prometheus
text format with the names, kinds and labels the model gave (counters keep
their name, without the ``_total`` suffix Triton does not add either).
"""
from __future__ import annotations

import bisect
import itertools
import threading
from typing import Optional

from ...errors import InvalidArgument

KINDS = {0: "counter", 1: "gauge", 2: "histogram"}


class _Metric:
    __slots__ = ("family", "labels", "value", "buckets", "counts", "sum", "count", "owners")

    def __init__(self, family, labels: dict, buckets: Optional[list]):
        self.family = family
        self.labels = labels
        self.value = 0.0
        self.buckets = sorted(buckets) if buckets else None
        self.counts = [0] * (len(self.buckets) + 1) if buckets else None
        self.sum = 0.0
        self.count = 0
        self.owners: set[int] = set()


class _Family:
    __slots__ = ("name", "description", "kind", "metrics", "owners")

    def __init__(self, name: str, description: str, kind: int):
        self.name, self.description, self.kind = name, description, kind
        self.metrics: dict[tuple, _Metric] = {}
        self.owners: set[int] = set()


class CustomMetricRegistry:
    def __init__(self):
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._families: dict[str, _Family] = {}
        self._family_ids: dict[int, _Family] = {}
        self._metric_ids: dict[int, _Metric] = {}

    def family(self, owner, name: str, description: str, kind: int) -> int:
        if kind not in KINDS:
            raise InvalidArgument(f"unknown metric kind {kind}")
        if not name or not (name[0].isalpha() or name[0] in "_:") or not all(
                c.isalnum() or c in "_:" for c in name):
            raise InvalidArgument(f"invalid metric family name '{name}'")
        with self._lock:
            family = self._families.get(name)
            if family is None:
                family = self._families[name] = _Family(name, description, kind)
            elif family.kind != kind or family.description != description:
                raise InvalidArgument(
                    f"A metric family named '{name}' already exists with a different kind or "
                    "description")
            family.owners.add(id(owner))
            family_id = next(self._ids)
            self._family_ids[family_id] = family
            return family_id

    def metric(self, owner, family_id: int, labels: dict, buckets: Optional[list]) -> int:
        with self._lock:
            family = self._family_ids[family_id]
            key = tuple(sorted(labels.items()))
            metric = family.metrics.get(key)
            if metric is None:
                metric = family.metrics[key] = _Metric(family, dict(labels), buckets)
            metric.owners.add(id(owner))
            metric_id = next(self._ids)
            self._metric_ids[metric_id] = metric
            return metric_id

    def update(self, metric_id: int, op: str, value: float) -> None:
        with self._lock:
            metric = self._metric_ids.get(metric_id)
            if metric is None:
                return
            if op == "increment":
                metric.value += value
            elif op == "set":
                metric.value = value
            elif op == "observe" and metric.buckets is not None:
                metric.counts[bisect.bisect_left(metric.buckets, value)] += 1
                metric.sum += value
                metric.count += 1

    def value(self, metric_id: int) -> float:
        with self._lock:
            return self._metric_ids[metric_id].value

    def drop_owner(self, owner) -> None:
        """An instance has gone: what only it kept alive goes too."""
        key = id(owner)
        with self._lock:
            for name, family in list(self._families.items()):
                family.owners.discard(key)
                for labels, metric in list(family.metrics.items()):
                    metric.owners.discard(key)
                    if not metric.owners:
                        del family.metrics[labels]
                if not family.owners:
                    del self._families[name]
            live = self._families
            self._family_ids = {i: f for i, f in self._family_ids.items() if live.get(f.name) is f}
            self._metric_ids = {i: m for i, m in self._metric_ids.items()
                                if m.owners and live.get(m.family.name) is m.family}

    def render(self) -> str:
        """The families in the Prometheus text exposition format."""
        from prometheus_client.utils import floatToGoString

        lines = []
        with self._lock:
            for family in sorted(self._families.values(), key=lambda f: f.name):
                description = family.description.replace("\\", r"\\").replace("\n", r"\n")
                lines.append(f"# HELP {family.name} {description}")
                lines.append(f"# TYPE {family.name} {KINDS[family.kind]}")
                for metric in family.metrics.values():
                    if metric.buckets is None:
                        lines.append(f"{family.name}{_labels(metric.labels)} "
                                     f"{floatToGoString(metric.value)}")
                        continue
                    running = 0
                    for bound, count in zip(metric.buckets + [float("inf")], metric.counts):
                        running += count
                        labels = dict(metric.labels, le=floatToGoString(bound))
                        lines.append(f"{family.name}_bucket{_labels(labels)} {running}")
                    lines.append(f"{family.name}_sum{_labels(metric.labels)} "
                                 f"{floatToGoString(metric.sum)}")
                    lines.append(f"{family.name}_count{_labels(metric.labels)} {metric.count}")
        return "".join(line + "\n" for line in lines)


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    body = ",".join('{}="{}"'.format(k, str(v).replace("\\", r"\\").replace("\n", r"\n")
                                     .replace('"', r'\"')) for k, v in sorted(labels.items()))
    return "{" + body + "}"


REGISTRY = CustomMetricRegistry()


def _expose() -> None:
    from ... import metrics

    metrics.register_text_source(REGISTRY.render)


_expose()
