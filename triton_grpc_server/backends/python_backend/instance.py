"""One Python model instance on the server side: its process, channel and in-flight requests.

``execute(requests)`` copies each request's inputs into the instance's shared
pool, sends one ``exec`` message and waits for the process to say that
``execute`` returned; answers are given to the requests by the reader thread
as they arrive (a decoupled model's may come before or after that). The
reader thread also serves what the model asks of the server: BLS requests,
metric updates, log lines, model control.

If the process dies, every request it held fails with an error naming the
instance and how the process ended; the next execution starts a fresh process
(Triton's restart), and after :data:`MAX_RESTARTS` failures in a row the
instance gives up and the model version is reported UNAVAILABLE with the reason.
"""
from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Optional, Sequence

from ...errors import Status, TritonError, Unavailable
from ...pb_stub.channel import Channel, ReadRole, socket_pair
from ...pb_stub.transport import Transport

log = logging.getLogger("triton_grpc_server.backends.python")
model_log = logging.getLogger("triton_grpc_server.python_model")

MAX_RESTARTS = 3
FINALIZE_TIMEOUT_SECS = 30.0
BUSY_GRACE_SECS = 5.0
_LOG_LEVELS = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR, 3: logging.DEBUG}
_STATUS_BY_CODE = {status.name: status for status in Status}
_now = time.monotonic_ns


def stub_command(fd: int) -> list[str]:
    return [sys.executable, "-m", "triton_grpc_server.pb_stub.stub", str(fd)]


def how_it_ended(returncode: Optional[int]) -> str:
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            return f"was killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


class StubDied(TritonError):
    status = Status.INTERNAL


class _Exec:
    __slots__ = ("requests", "keys", "stub", "done", "error", "start")

    def __init__(self, requests, keys, stub):
        self.requests = requests
        self.keys = keys
        self.stub = stub
        self.done = threading.Event()
        self.error: Optional[str] = None
        self.start = _now()


class StubProcess:
    """A running instance process and the read role that serves its messages."""

    def __init__(self, name: str, host: "Any"):
        self.name = name
        self.host = host  # the PythonInstance: request table, BLS, metrics
        self.transport = Transport(f"{name}-{os.getpid()}")
        ours, theirs = socket_pair()
        try:
            self.process = subprocess.Popen(stub_command(theirs), pass_fds=(theirs,),
                                            stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            os.close(theirs)
        self.channel = Channel(ours, self.transport)
        self.alive = True
        self.closing = False
        self.initialized = False
        self.init_error: Optional[str] = None
        self.finalized = False
        self._ended = threading.Lock()
        self.returncode: Optional[int] = None
        self.role = ReadRole(self.channel, self._dispatch, self._on_eof, f"python-{name}")

    def initialize(self, model_file: str, args: dict) -> None:
        """Import model.py and run ``initialize(args)`` in the process; raise its error."""
        role = self.role
        role.claim()
        try:
            self.channel.send(("init", model_file, args))
            while not self.initialized and self.init_error is None:
                role.read_one()
        except (EOFError, OSError):
            pass
        finally:
            role.release()
        if self.init_error is not None:
            raise TritonError(self.init_error)

    def _dispatch(self, message: tuple) -> None:
        host = self.host
        kind = message[0]
        if kind == "done":
            host.on_done(self, message[1], message[2], message[3])
        elif kind == "resp":
            host.on_response(self, message[1], message[2], message[3])
        elif kind == "resp_error":
            host.on_request_error(message[1], message[2])
        elif kind == "bls":
            host.on_bls(self, message)
        elif kind == "call":
            host.on_call(self, message[1], message[2], message[3])
        elif kind == "metric_op":
            host.on_metric(message[1], message[2], message[3])
        elif kind == "log":
            level, text, filename, line = message[1:]
            model_log.log(_LOG_LEVELS.get(level, logging.INFO), "%s:%d] %s", filename, line, text)
        elif kind == "init_ok":
            self.initialized = True
        elif kind == "init_err":
            self.init_error = message[1]
        elif kind == "finalized":
            self.finalized = True

    def _on_eof(self) -> None:
        """The process has gone (or closed its end): reap it and fail what it held, once."""
        if not self._ended.acquire(blocking=False):
            return
        self.alive = False
        try:
            self.returncode = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.returncode = self.process.wait()
        if not self.initialized and self.init_error is None:
            self.init_error = (f"Stub process '{self.name}' {how_it_ended(self.returncode)} "
                               f"during initialize")
        self.host.on_exit(self, self.returncode)

    def send(self, message: tuple) -> None:
        self.channel.send(message)

    def stop(self, timeout: float = FINALIZE_TIMEOUT_SECS) -> None:
        """Ask for ``finalize``; kill the process if it has not ended after ``timeout``."""
        self.closing = True
        role = self.role
        # An execute still running (a server shutting down with requests in flight, a
        # hung model) keeps the read role; it gets a short grace, then the process goes.
        if self.alive and role.claim(timeout=BUSY_GRACE_SECS):
            try:
                self.send(("finalize",))
                deadline = time.monotonic() + timeout
                while not self.finalized:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self.channel.connection.poll(left):
                        break
                    role.read_one()
            except (OSError, EOFError):
                pass
            finally:
                role.release()
        try:
            self.process.wait(timeout=5 if self.finalized else 0.1)
        except subprocess.TimeoutExpired:
            log.warning("instance '%s' did not finish; killing its process", self.name)
            self.process.kill()
            self.process.wait()
        self.role.close()
        self._on_eof()
        self.channel.close()
        self.transport.close()

    def dispose(self) -> None:
        """Release what a dead process left: its watcher, socket and shared memory."""
        self.role.close()
        self.channel.close()
        self.transport.close()


class PythonInstance:
    """BackendInstance of a Python model: one process, restarted when it dies."""

    def __init__(self, backend, name: str, kind: str, device_id: int):
        self.backend = backend
        self.name = name
        self.kind = kind
        self.device_id = device_id
        self.decoupled = backend.decoupled
        self.input_datatypes = backend.input_datatypes
        self._ids = itertools.count(1)
        # Reentrant: a restart holds it while the new process initializes, and a
        # process dying during that initialize reports its exit on the same thread.
        self._lock = threading.RLock()
        self._requests: dict[int, Any] = {}  # key -> ScheduledRequest awaiting its final answer
        self._execs: dict[int, _Exec] = {}
        self._failures = 0
        self._gave_up: Optional[str] = None
        self._closed = False
        self.stub = self._launch()

    # -- process lifecycle ----------------------------------------------
    def _launch(self) -> StubProcess:
        stub = StubProcess(self.name, self)
        try:
            stub.initialize(str(self.backend.model_path), self.backend.initialize_args(self))
        except BaseException:
            stub.stop(timeout=1.0)
            raise
        return stub

    def _ensure_running(self) -> StubProcess:
        """The live process, relaunching a dead one; raises once restarts are exhausted."""
        stub = self.stub
        if stub.alive:
            return stub
        with self._lock:
            stub = self.stub
            if stub.alive:
                return stub
            if self._gave_up is not None:
                raise Unavailable(self._gave_up)
            stub.dispose()
            while True:
                log.warning("restarting the process of model instance '%s'", self.name)
                try:
                    self.stub = self._launch()
                    return self.stub
                except TritonError as exc:
                    self._failures += 1
                    if self._failures >= MAX_RESTARTS:
                        self._gave_up = (f"Stub process '{self.name}' is not healthy: restarting "
                                         f"it failed {self._failures} times: {exc.message}")
                        self.backend.report_unavailable(self._gave_up)
                        raise Unavailable(self._gave_up) from None

    def on_exit(self, stub: StubProcess, returncode: Optional[int]) -> None:
        """The process ended: fail what it held (unless it was asked to stop and finished)."""
        if stub.closing:
            reason = (f"model instance '{self.name}' was unloaded while the request was running "
                      f"(its process {how_it_ended(returncode)})")
        else:
            reason = (f"Failed to process the request(s) for model instance '{self.name}', "
                      f"message: Stub process '{self.name}' is not healthy: the instance process "
                      f"{how_it_ended(returncode)}")
            if stub.initialized:  # a failed (re)start is counted where it was attempted
                log.error("%s", reason)
                self._failures += 1
                if self._failures >= MAX_RESTARTS and self._gave_up is None:
                    self._gave_up = f"{reason} ({self._failures} times in a row)"
                    self.backend.report_unavailable(self._gave_up)
        with self._lock:
            owned = [key for key, (_, owner) in self._requests.items() if owner is stub]
            requests = [self._requests.pop(key)[0] for key in owned]
            execs = [exec_id for exec_id, e in self._execs.items() if e.stub is stub]
            waiting = [self._execs.pop(exec_id) for exec_id in execs]
        for work in requests:
            work.respond_error(StubDied(reason))
        for done in waiting:
            done.error = reason
            done.done.set()

    # -- execution --------------------------------------------------------
    def execute(self, requests: Sequence[Any]) -> None:
        try:
            stub = self._ensure_running()
        except TritonError as exc:
            for work in requests:
                work.respond_error(Unavailable(exc.message))
            return
        encode = stub.transport.encode
        datatypes = self.input_datatypes
        batch = []
        keys = []
        try:
            for work in requests:
                key = next(self._ids)
                request = work.request
                parameters = request.parameters or {}
                inputs = [(name,) + encode(array, datatypes.get(name))
                          for name, array in work.inputs.items()]
                flags = ((1 if parameters.get("sequence_start") else 0)
                         | (2 if parameters.get("sequence_end") else 0))
                batch.append((key, request.id, parameters.get("sequence_id", 0), flags,
                              parameters.get("timeout", 0), inputs, list(work.output_names),
                              _user_parameters(work.parameters), self.backend.model_name,
                              self.backend.version))
                keys.append(key)
        except Exception as exc:
            for work in requests:
                work.respond_error(TritonError(f"{type(exc).__name__}: {exc}"))
            return
        exec_id = next(self._ids)
        waiting = _Exec(requests, keys, stub)
        with self._lock:
            for key, work in zip(keys, requests):
                self._requests[key] = (work, stub)
            self._execs[exec_id] = waiting
        for key, work in zip(keys, requests):  # request.is_cancelled() in the model
            add = getattr(work.request, "add_cancel_callback", None)
            if add is not None:
                add(lambda key=key, stub=stub: self._cancel(stub, key))
        role = stub.role
        role.claim()
        try:
            stub.send(("exec", exec_id, batch))
            del batch
            while not waiting.done.is_set():
                role.read_one()
        except (OSError, EOFError):
            pass  # the process has gone: on_exit failed these requests
        finally:
            role.release()
        if not waiting.done.is_set():  # it had gone before these were registered
            with self._lock:
                self._execs.pop(exec_id, None)
            for key, work in zip(keys, requests):
                if self._forget(key):
                    work.respond_error(StubDied(
                        f"Failed to process the request(s) for model instance '{self.name}', "
                        f"message: Stub process '{self.name}' is not healthy"))

    def _cancel(self, stub: StubProcess, key: int) -> None:
        try:
            stub.send(("cancel", key))
        except (OSError, EOFError):
            pass

    def on_done(self, stub: StubProcess, exec_id: int, answers, error: Optional[str]) -> None:
        with self._lock:
            waiting = self._execs.pop(exec_id, None)
        if waiting is None:
            return
        self._failures = 0
        requests, keys = waiting.requests, waiting.keys
        _record(requests, _now() - waiting.start)
        if error is not None:
            message = (f"Failed to process the request(s) for model instance '{self.name}', "
                       f"message: {error}")
            for key, work in zip(keys, requests):
                if self._forget(key):
                    work.respond_error(TritonError(message))
        elif answers is None:  # answered through senders (decoupled), or not at all
            if not self.decoupled:
                for key, work in zip(keys, requests):
                    if self._forget(key):
                        work.respond_error(TritonError(
                            f"Failed to process the request(s) for model instance "
                            f"'{self.name}', message: execute returned no responses"))
        else:
            for key, work, answer in zip(keys, requests, answers):
                if not self._forget(key):
                    continue  # answered through its sender already
                if answer is None:
                    work.respond_error(TritonError(
                        f"Failed to process the request(s) for model instance '{self.name}', "
                        f"message: the response of request '{work.request.id}' is None"))
                else:
                    self._answer(stub, work, answer, final=True)
        waiting.done.set()

    def _forget(self, key: int) -> bool:
        """Stop tracking a request; False if it had already had its final answer."""
        with self._lock:
            return self._requests.pop(key, None) is not None

    def on_response(self, stub: StubProcess, key: int, answer, final: bool) -> None:
        with self._lock:
            entry = self._requests.get(key)
            if entry is not None and final:
                del self._requests[key]
        if entry is None:
            return
        work = entry[0]
        if answer is None:
            work.respond(None, final=final)
        else:
            self._answer(stub, work, answer, final)

    def on_request_error(self, key: int, text: str) -> None:
        with self._lock:
            entry = self._requests.pop(key, None)
        if entry is not None:
            entry[0].respond_error(TritonError(
                f"Failed to process the request(s) for model instance '{self.name}', "
                f"message: {text}"))

    def _answer(self, stub: StubProcess, work, answer, final: bool) -> None:
        outputs, error, _parameters = answer
        if error is not None:
            work.respond_error(TritonError(error[0], _STATUS_BY_CODE.get(error[1], Status.INTERNAL)),
                               final=final)
            return
        decode = stub.transport.decode
        try:
            arrays = {name: decode(datatype, shape, location)
                      for name, datatype, shape, location in outputs}
        except Exception as exc:
            work.respond_error(TritonError(f"model instance '{self.name}': bad output: {exc}"),
                               final=final)
            return
        work.respond(arrays, final=final)

    # -- what the model asks of the server ------------------------------
    def on_bls(self, stub: StubProcess, message: tuple) -> None:
        from .bls import run_bls

        run_bls(self.backend, stub, message)

    def on_call(self, stub: StubProcess, call_id: int, op: str, args) -> None:
        from .calls import serve_call

        serve_call(self.backend, stub, call_id, op, args)

    def on_metric(self, metric_id: int, op: str, value: float) -> None:
        from .custom_metrics import REGISTRY

        REGISTRY.update(metric_id, op, value)

    def close(self) -> None:
        self._closed = True
        self.stub.stop()
        from .custom_metrics import REGISTRY

        REGISTRY.drop_owner(self)


def _user_parameters(parameters) -> str:
    import json

    if not parameters:
        return "{}"
    return json.dumps({k: v for k, v in parameters.items()
                       if isinstance(v, (bool, int, str, float))})


def _record(requests, infer_ns: int) -> None:
    try:
        from ...scheduler.base import record_execution
    except ImportError:
        return
    record_execution(list(requests), 0, infer_ns, 0)
