"""The default scheduler: each request runs on the next free instance.

Instances of one model run concurrently on the calling threads; one instance
never runs two requests at once.
"""
from __future__ import annotations

import queue
from typing import Any, Mapping, Sequence

from ..backends.base import BackendInstance


class InstancePool:
    def __init__(self, instances: Sequence[BackendInstance]):
        self.instances = list(instances)
        self._free: "queue.SimpleQueue[BackendInstance]" = queue.SimpleQueue()
        for instance in self.instances:
            self._free.put(instance)

    def execute(self, inputs: Mapping[str, Any], output_names: Sequence[str],
                parameters: Mapping[str, Any]) -> Mapping[str, Any]:
        instance = self._free.get()
        try:
            return instance.execute(inputs, output_names, parameters)
        finally:
            self._free.put(instance)

    def close(self) -> None:
        for instance in self.instances:
            instance.close()
