"""Per-model scheduling between the data plane and the backend instances.

:func:`create_scheduler` picks Triton's behaviour from the model config: the
:class:`DynamicBatcher` when ``dynamic_batching`` is set on a model with a
batch dimension, else the :class:`InstancePool` (each request on the next
free instance). Every scheduler has ``enqueue(work) -> None``, which returns
at once, and ``close()``; instances run on their own worker threads and answer
each :class:`ScheduledRequest` through it. They record into the version's
:class:`~triton_grpc_server.stats.ModelStats`.
"""
from __future__ import annotations

from typing import Optional, Protocol, Sequence

from ..stats import ModelStats
from .base import QueueFull, QueueTimeout, RequestCancelled, ScheduledRequest
from .batcher import DynamicBatcher
from .instance_pool import InstancePool


class Scheduler(Protocol):
    def enqueue(self, work: ScheduledRequest) -> None: ...

    def close(self) -> None: ...


__all__ = ["DynamicBatcher", "InstancePool", "QueueFull", "QueueTimeout", "RequestCancelled",
           "ScheduledRequest", "Scheduler", "create_scheduler"]


def create_scheduler(config, instances: Sequence, stats: Optional[ModelStats] = None,
                     context=None) -> Scheduler:
    """``context``: the version's BackendContext (an ensemble reaches the data plane
    through it; a sequence model's initial state files sit under its ``model_dir``)."""
    if config.platform == "ensemble":
        from .ensemble import EnsembleScheduler

        return EnsembleScheduler(config, stats, context)
    if config.HasField("sequence_batching"):
        from .sequence_batcher import SequenceBatcher

        return SequenceBatcher(config, instances, stats,
                               model_dir=getattr(context, "model_dir", None))
    if config.max_batch_size > 0 and config.HasField("dynamic_batching"):
        return DynamicBatcher(config, instances, stats)
    return InstancePool(instances, stats, name=config.name)
