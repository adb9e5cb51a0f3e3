"""What the workers of one supervisor tell each other: model control and statistics.

Each worker serves a small private gRPC service on loopback (its address is its
entry in ``worker_peers``) next to the shared public ports. A model load or
unload that reaches any worker's API is applied there, then sent to every other
worker, and the RPC returns once all of them have it, so RepositoryIndex reads the
same from any worker. ModelStatistics asks every worker and adds the figures up:
the client sees one server.

The messages are JSON (orjson); bytes (a ``file:`` override's contents) travel as
base64. This is a frontend module for ``server.FRONTENDS``: it starts first, so a
worker that replaces one that died copies its peers' loaded models before the
public ports serve anything.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import os
from concurrent import futures
from typing import Optional

import grpc
import orjson

from ..errors import Status, TritonError
from ..stats import BatchStats, Duration, ModelStats

log = logging.getLogger(__name__)

METHOD = "/triton_grpc_server.Workers/Call"
# A peer that does not answer in this time is treated as gone (the supervisor restarts
# it, and a restarted worker copies the others' models).
CALL_TIMEOUT_S = 120.0
# Statistics are read on the HTTP frontend's loop: a peer that hangs must not hold it.
STATISTICS_TIMEOUT_S = 5.0
PING_TIMEOUT_S = 2.0


# -- values on the wire ----------------------------------------------------------
def _encode_parameters(parameters: dict) -> dict:
    return {k: ({"__b64__": base64.b64encode(v).decode()} if isinstance(v, (bytes, bytearray))
                else v) for k, v in (parameters or {}).items()}


def _decode_parameters(parameters: dict) -> dict:
    return {k: (base64.b64decode(v["__b64__"]) if isinstance(v, dict) and "__b64__" in v else v)
            for k, v in (parameters or {}).items()}


_DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
_BATCH_DURATIONS = ("compute_input", "compute_infer", "compute_output")


def stats_to_json(stats: ModelStats) -> dict:
    return {
        **{name: [getattr(stats, name).count, getattr(stats, name).ns] for name in _DURATIONS},
        "inference_count": stats.inference_count, "execution_count": stats.execution_count,
        "last_inference_ms": stats.last_inference_ms, "failures": stats.failures,
        "pending": stats.pending,
        "batch_stats": {str(size): {n: [getattr(b, n).count, getattr(b, n).ns]
                                    for n in _BATCH_DURATIONS}
                        for size, b in stats.batch_stats.items()},
    }


def merge_stats(snapshots) -> ModelStats:
    """One version's figures summed over workers (the latest ``last_inference``)."""
    merged = ModelStats()
    for s in snapshots:
        for name in _DURATIONS:
            count, ns = s[name]
            getattr(merged, name).add(ns, count)
        merged.inference_count += s["inference_count"]
        merged.execution_count += s["execution_count"]
        merged.last_inference_ms = max(merged.last_inference_ms, s["last_inference_ms"])
        merged.pending += s["pending"]
        for reason, count in s["failures"].items():
            merged.failures[reason] = merged.failures.get(reason, 0) + count
        for size, durations in s["batch_stats"].items():
            batch = merged.batch_stats.setdefault(int(size), BatchStats())
            for name in _BATCH_DURATIONS:
                count, ns = durations[name]
                getattr(batch, name).add(ns, count)
    return merged


def _error_to_json(exc: BaseException) -> dict:
    if isinstance(exc, TritonError):
        return {"error": exc.message, "status": exc.status.name}
    return {"error": str(exc) or type(exc).__name__, "status": Status.INTERNAL.name}


def _raise_from_json(answer: dict) -> None:
    if "error" in answer:
        raise TritonError(answer["error"], Status[answer["status"]])


# -- calling a peer --------------------------------------------------------------
class PeerClient:
    """Blocking calls to one worker's coordination service (from pool threads)."""

    def __init__(self, address: str):
        self.address = address
        self._channel = grpc.insecure_channel(address)
        self._call = self._channel.unary_unary(METHOD)

    def call(self, op: str, timeout: float = CALL_TIMEOUT_S, **arguments):
        """The op's result; TritonError for the peer's own error; grpc.RpcError if unreachable."""
        answer = orjson.loads(self._call(orjson.dumps({"op": op, **arguments}), timeout=timeout))
        _raise_from_json(answer)
        return answer.get("result")

    def close(self) -> None:
        self._channel.close()


def _unreachable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.RpcError) and exc.code() in (
        grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class WorkerGroup:
    """This worker's view of the others; replaces the data plane's group-wide methods."""

    def __init__(self, dataplane, index: int, addresses: list[str]):
        self.dataplane = dataplane
        self.index = index
        self.addresses = addresses
        self.peers = [PeerClient(a) for i, a in enumerate(addresses) if i != index]
        self._pool = futures.ThreadPoolExecutor(max_workers=max(1, len(self.peers)),
                                                thread_name_prefix="worker-peers")
        # The data plane's own (this worker only) methods, which the peers' calls run.
        self.local_load = dataplane.load_model
        self.local_unload = dataplane.unload_model
        self.local_statistics = dataplane.model_statistics

    def install(self) -> None:
        self.dataplane.load_model = self.load_model
        self.dataplane.unload_model = self.unload_model
        self.dataplane.model_statistics = self.model_statistics

    def _everywhere(self, op: str, timeout: float = CALL_TIMEOUT_S, **arguments) -> list:
        """``op`` on every other worker at once: their results (None for one that is gone)."""
        def one(peer):
            try:
                return peer.call(op, timeout=timeout, **arguments)
            except grpc.RpcError as exc:
                if _unreachable(exc):  # dead or restarting: it copies the models when back
                    log.warning("worker at %s did not answer %s: %s", peer.address, op, exc.code())
                    return None
                raise TritonError(f"worker at {peer.address}: {exc.details()}")
        return list(self._pool.map(one, self.peers))

    def load_model(self, name: str, parameters: dict) -> None:
        self.local_load(name, parameters)
        self._everywhere("load", name=name, parameters=_encode_parameters(parameters))

    def unload_model(self, name: str, parameters: dict) -> None:
        self.local_unload(name, parameters)
        self._everywhere("unload", name=name, parameters=_encode_parameters(parameters))

    def model_statistics(self, name: str = "", version: str = ""):
        rows = self.local_statistics(name, version)  # Triton's errors come from here
        by_key = {(model, number): [stats_to_json(stats)] for model, number, stats in rows}
        for answer in self._everywhere("statistics", timeout=STATISTICS_TIMEOUT_S,
                                       name=name, version=version):
            for model, number, stats in answer or ():
                if (model, number) in by_key:  # a version another worker lacks is not shown
                    by_key[(model, number)].append(stats)
        return [(model, number, merge_stats(by_key[(model, number)]))
                for model, number, _ in rows]

    def copy_models_from_peers(self) -> None:
        """A replacement worker: load what the others have READY, unload what they don't."""
        for peer in self.peers:
            try:
                rows = peer.call("index", timeout=PING_TIMEOUT_S * 5)
            except grpc.RpcError:
                continue
            ready = {name for name, _, state, _ in rows if state == "READY"}
            mine = {name for name, _, state, _ in self.dataplane.repository_index(False)
                    if state == "READY"}
            for name in sorted(ready - mine):
                try:
                    self.local_load(name, {})
                except TritonError as exc:
                    log.warning("could not load '%s' as the other workers have it: %s",
                                name, exc.message)
            for name in sorted(mine - ready):
                try:
                    self.local_unload(name, {})
                except TritonError:
                    pass
            log.info("copied the model states of the worker at %s", peer.address)
            return
        log.warning("no other worker answered; serving the start-up models")

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        for peer in self.peers:
            peer.close()


# -- answering peers: the frontend module interface ----------------------------
class CoordinationService:
    name = "worker coordination"

    def __init__(self, server, group: WorkerGroup, executor):
        self.server = server
        self.group = group
        self.executor = executor

    async def stop(self, grace: float) -> None:
        await self.server.stop(grace)
        self.executor.shutdown(wait=False)
        self.group.close()


def _handle(group: WorkerGroup, message: dict):
    op = message["op"]
    if op == "ping":
        return {"pid": os.getpid(), "index": group.index}
    if op == "load":
        return group.local_load(message["name"], _decode_parameters(message["parameters"]))
    if op == "unload":
        return group.local_unload(message["name"], _decode_parameters(message["parameters"]))
    if op == "statistics":
        try:
            rows = group.local_statistics(message["name"], message["version"])
        except TritonError:
            return []  # "not available" here: nothing to add
        return [[model, number, stats_to_json(stats)] for model, number, stats in rows]
    if op == "index":
        return [list(row) for row in group.dataplane.repository_index(False)]
    raise TritonError(f"unknown worker operation '{op}'", Status.INVALID_ARG)


async def start(dataplane, settings) -> CoordinationService:
    addresses = [a.strip() for a in settings.worker_peers.split(",") if a.strip()]
    index = settings.worker_index
    if not 0 <= index < len(addresses):
        raise RuntimeError(f"worker index {index} is not in the peer list {addresses}")
    group = WorkerGroup(dataplane, index, addresses)
    loop = asyncio.get_running_loop()
    if settings.worker_restart:
        await loop.run_in_executor(None, group.copy_models_from_peers)
    group.install()

    executor = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="worker-coord")

    async def call(data: bytes, context) -> bytes:
        try:
            result = await loop.run_in_executor(executor, _handle, group, orjson.loads(data))
            return orjson.dumps({"result": result})
        except Exception as exc:  # returned, not raised: the caller re-raises it as is
            return orjson.dumps(_error_to_json(exc))

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        METHOD.split("/")[1], {"Call": grpc.unary_unary_rpc_method_handler(call)}),))
    if not server.add_insecure_port(addresses[index]):
        raise RuntimeError(f"failed to bind the worker coordination service on {addresses[index]}")
    await server.start()
    return CoordinationService(server, group, executor)


def ping(address: str, timeout: float = PING_TIMEOUT_S) -> Optional[dict]:
    """The worker's ``{"pid", "index"}``, or None while it does not answer."""
    client = PeerClient(address)
    try:
        return client.call("ping", timeout=timeout)
    except (grpc.RpcError, TritonError):
        return None
    finally:
        client.close()
