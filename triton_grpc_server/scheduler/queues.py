"""The dynamic batcher's queue: one FIFO per priority level, each with its policy.

Triton's semantics (``dynamic_batching.default_queue_policy`` and
``priority_queue_policy``): a level holds at most ``max_queue_size`` requests
(0 = unbounded); a request waits at most its timeout (the level's
``default_timeout_microseconds``, or the request's ``timeout`` parameter when
``allow_timeout_override``), after which it is rejected (REJECT) or moved
behind the level's other requests (DELAY). Level 1 is the highest priority.
Not thread-safe: the batcher holds its lock around every call.
"""
from __future__ import annotations

from collections import deque
from typing import Iterator, Optional

from .._proto import model_config_pb2 as mc
from .base import QUEUED, QueueFull, ScheduledRequest

# The queued items are ScheduledRequest objects (scheduler/base.py).


class LevelQueue:
    def __init__(self, policy):
        self.max_size = policy.max_queue_size
        self.timeout_ns = policy.default_timeout_microseconds * 1000
        self.allow_override = policy.allow_timeout_override
        self.delay_on_timeout = policy.timeout_action == mc.ModelQueuePolicy.DELAY
        self.items: deque[ScheduledRequest] = deque()
        self.delayed: deque[ScheduledRequest] = deque()

    def __len__(self) -> int:
        return len(self.items) + len(self.delayed)

    def deadline_for(self, timeout_us: int) -> int:
        """Nanoseconds a request may wait here (0 = no limit)."""
        if self.allow_override and timeout_us > 0:
            return timeout_us * 1000
        return self.timeout_ns


class PriorityQueue:
    def __init__(self, batching):
        self.levels_count = batching.priority_levels
        default = batching.default_priority_level
        self.default_level = default if 1 <= default <= self.levels_count else 1
        self.levels: list[LevelQueue] = []
        for level in range(1, max(self.levels_count, 1) + 1):
            policies = batching.priority_queue_policy
            policy = policies[level] if level in policies else batching.default_queue_policy
            self.levels.append(LevelQueue(policy))
        self.has_timeouts = any(q.timeout_ns or q.allow_override for q in self.levels)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def level_of(self, priority: int) -> int:
        """Index into ``levels``: 0 for the highest priority (Triton's level 1)."""
        if self.levels_count == 0:
            return 0
        if 1 <= priority <= self.levels_count:
            return priority - 1
        return self.default_level - 1  # 0 or out of range: the default level, as Triton

    def put(self, request: ScheduledRequest, priority: int, timeout_us: int, now: int) -> None:
        level = self.level_of(priority)
        queue = self.levels[level]
        if queue.max_size and len(queue) >= queue.max_size:
            raise QueueFull()
        timeout_ns = queue.deadline_for(timeout_us)
        request.level = level
        request.enqueue_ns = now
        request.deadline_ns = now + timeout_ns if timeout_ns else 0
        queue.items.append(request)
        self.size += 1

    def __iter__(self) -> Iterator[ScheduledRequest]:
        """Queued requests in the order batches take them: level by level, delayed last."""
        for queue in self.levels:
            yield from queue.items
            yield from queue.delayed

    def first(self) -> Optional[ScheduledRequest]:
        for queue in self.levels:
            if queue.items:
                return queue.items[0]
            if queue.delayed:
                return queue.delayed[0]
        return None

    def expire(self, now: int) -> list[ScheduledRequest]:
        """Apply timeouts: return the requests to reject, move the ones to delay."""
        rejected = []
        for queue in self.levels:
            if not any(r.deadline_ns and r.deadline_ns <= now for r in queue.items):
                continue
            keep = deque()
            for request in queue.items:
                if request.deadline_ns and request.deadline_ns <= now:
                    if queue.delay_on_timeout:
                        request.deadline_ns = 0
                        queue.delayed.append(request)
                    else:
                        rejected.append(request)
                else:
                    keep.append(request)
            queue.items = keep
        self.size -= len(rejected)
        return rejected

    def next_deadline(self) -> int:
        """The earliest timeout among queued requests, 0 if none."""
        if not self.has_timeouts:
            return 0
        deadlines = [r.deadline_ns for q in self.levels for r in q.items if r.deadline_ns]
        return min(deadlines) if deadlines else 0

    def remove_marked(self, count: int) -> None:
        """Remove ``count`` requests whose state is no longer QUEUED (taken or dropped)."""
        self.size -= count
        for queue in self.levels:
            for side in (queue.items, queue.delayed):
                while side and count and side[0].state != QUEUED:
                    side.popleft()
                    count -= 1
        if count:
            for queue in self.levels:
                queue.items = deque(r for r in queue.items if r.state == QUEUED)
                queue.delayed = deque(r for r in queue.delayed if r.state == QUEUED)
