"""The instance process: runs one ``model.py`` for one model instance.

Started by the server as ``python -m triton_grpc_server.pb_stub.stub FD``
with one end of a socket pair. A reader thread takes messages off the socket;
the main thread runs ``initialize``, each ``execute`` and ``finalize`` in
order, so the model sees Triton's one-batch-at-a-time contract. BLS calls,
metric calls and decoupled responses may come from any thread of the model.
The process exits when the server closes the socket (or dies).
"""
from __future__ import annotations

import importlib.util
import inspect
import itertools
import json
import os
import collections
import queue
import sys
import threading
import traceback

from . import pb_utils
from .channel import Channel, ReadRole
from .transport import Transport


_HERE = os.path.dirname(os.path.abspath(__file__))


def error_text(exc: BaseException) -> str:
    """An exception as Triton's stub prints it: type, message and the model's frames."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(_HERE)]
    text = f"{type(exc).__name__}: {exc}"
    if frames:
        text += "\n\nAt:\n" + "".join(f"  {f.filename}({f.lineno}): {f.name}\n" for f in frames[::-1])
    return text


def load_model_class(path: str):
    """Import ``model.py`` (its directory joins sys.path, as Triton does) -> TritonPythonModel."""
    sys.modules["triton_python_backend_utils"] = pb_utils
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:
        sys.path.append(directory)
    spec = importlib.util.spec_from_file_location("model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return module.TritonPythonModel
    except AttributeError:
        raise pb_utils.TritonModelException(
            f"'{path}' defines no class named 'TritonPythonModel'") from None


class _Call:
    __slots__ = ("event", "value")

    def __init__(self):
        self.event = threading.Event()
        self.value = None


class Runtime:
    """What ``pb_utils`` calls into: the channel to the server and the model's state."""

    def __init__(self, channel: Channel):
        self.channel = channel
        self.transport = channel.transport
        self.work: "collections.deque" = collections.deque()
        self.ids = itertools.count(1)
        self.calls: dict[int, _Call] = {}
        self.bls_waiters: dict[int, "queue.SimpleQueue"] = {}
        self.cancelled: set[int] = set()
        self.decoupled = False
        self.model = None
        self.loop = None
        self._loop_thread = None

    # -- reading --------------------------------------------------------
    def dispatch(self, message: tuple) -> None:
        kind = message[0]
        if kind == "bls_resp":
            waiter = self.bls_waiters.get(message[1])
            if waiter is not None:
                waiter.put(message)
        elif kind == "reply":
            call = self.calls.pop(message[1], None)
            if call is not None:
                call.value = message[2:]
                call.event.set()
        elif kind == "cancel":
            self.cancelled.add(message[1])
        elif kind != "release":
            self.work.append(message)  # exec, finalize: run by the main thread

    # -- calls from pb_utils ------------------------------------------------
    def call(self, op: str, *args):
        call_id = next(self.ids)
        call = _Call()
        self.calls[call_id] = call
        self.channel.send(("call", call_id, op, args))
        call.event.wait()
        ok, value = call.value
        if not ok:
            raise pb_utils.TritonModelException(value)
        return value

    def log(self, level: int, message: str, filename: str, line: int) -> None:
        self.channel.send(("log", level, message, os.path.basename(filename), line))

    def metric_update(self, metric_id: int, op: str, value: float) -> None:
        self.channel.send(("metric_op", metric_id, op, value))

    def is_cancelled(self, key: int) -> bool:
        return key in self.cancelled

    def send_response(self, key: int, response, final: bool) -> None:
        encoded = self.encode_response(response, None) if response is not None else None
        self.channel.send(("resp", key, encoded, final))
        if final:
            self.cancelled.discard(key)

    def encode_response(self, response, requested) -> tuple:
        """(outputs, error, parameters) of a pb_utils.InferenceResponse."""
        if not isinstance(response, pb_utils.InferenceResponse):
            raise pb_utils.TritonModelException(
                f"Expected an 'InferenceResponse' object in the execute function return list, "
                f"found type '{type(response).__name__}'.")
        error = response.error()
        if error is not None:
            return None, (error.message(), error.code().name), response.parameters()
        encode = self.transport.encode
        outputs = []
        for tensor in response.output_tensors():
            name = tensor.name()
            if requested is not None and name not in requested:
                continue  # Triton drops outputs the request did not ask for
            outputs.append((name,) + encode(tensor.as_numpy(), tensor._datatype))
        return outputs, None, response.parameters()

    def bls(self, request: "pb_utils.InferenceRequest", decoupled: bool):
        bls_id = next(self.ids)
        waiter: "queue.SimpleQueue" = queue.SimpleQueue()
        self.bls_waiters[bls_id] = waiter
        encode = self.transport.encode
        inputs = [(t.name(),) + encode(t.as_numpy(), t._datatype) for t in request.inputs()]
        try:
            self.channel.send(("bls", bls_id, request.model_name, request.model_version,
                               request.request_id(), request.correlation_id(), request.flags(),
                               request.timeout(), inputs, request.requested_output_names(),
                               request.parameters(), decoupled))
        except BaseException:
            self.bls_waiters.pop(bls_id, None)
            raise
        if not decoupled:
            try:
                return self._bls_response(waiter.get())
            finally:
                self.bls_waiters.pop(bls_id, None)
        return self._bls_stream(bls_id, waiter)

    def _bls_stream(self, bls_id, waiter):
        try:
            while True:
                message = waiter.get()
                yield self._bls_response(message)
                if message[4]:  # final
                    return
        finally:
            self.bls_waiters.pop(bls_id, None)

    def _bls_response(self, message) -> "pb_utils.InferenceResponse":
        _, _, outputs, error, _final, parameters = message
        if error is not None:
            code = getattr(pb_utils.TritonError, error[1], pb_utils.TritonError.INTERNAL)
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(error[0], code))
        decode = self.transport.decode
        tensors = [pb_utils.Tensor._wrap(name, datatype, decode(datatype, shape, location))
                   for name, datatype, shape, location in outputs or ()]
        return pb_utils.InferenceResponse(output_tensors=tensors, parameters=parameters)

    # -- the model's lifecycle ------------------------------------------
    def initialize(self, path: str, args: dict) -> None:
        model_class = load_model_class(path)
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(
            json.loads(args["model_config"]))
        self.model = model_class()
        if hasattr(self.model, "initialize"):
            self.model.initialize(args)

    def execute(self, exec_id: int, batch: list) -> tuple:
        """Run one batch; returns the "done" message (sent by the caller, see main)."""
        decode = self.transport.decode
        decoupled = self.decoupled
        requests = []
        requested = []
        for (key, request_id, correlation_id, flags, timeout, inputs, output_names, parameters,
             model_name, model_version) in batch:
            tensors = [pb_utils.Tensor._wrap(name, datatype, decode(datatype, shape, location))
                       for name, datatype, shape, location in inputs]
            requests.append(pb_utils.InferenceRequest._received(
                key, request_id, correlation_id, flags, timeout, tensors, output_names,
                parameters, model_name, model_version, decoupled))
            requested.append(set(output_names))
        try:
            result = self.model.execute(requests)
            if inspect.iscoroutine(result):
                import asyncio

                if decoupled:  # Triton does not wait for a decoupled coroutine
                    self._submit(result, requests)
                    result = None
                else:
                    result = asyncio.run_coroutine_threadsafe(result, self._event_loop()).result()
            answers = None
            if not decoupled and result is not None:
                if not isinstance(result, (list, tuple)) or len(result) != len(requests):
                    raise pb_utils.TritonModelException(
                        f"Number of InferenceResponse objects do not match the number of "
                        f"InferenceRequest objects. InferenceRequest(s) size is {len(requests)}, "
                        f"and InferenceResponse(s) size is "
                        f"{len(result) if isinstance(result, (list, tuple)) else 'not a list'}")
                answers = []
                for response, names, request in zip(result, requested, requests):
                    if request._sender._closed:
                        answers.append(None)  # answered through its sender already
                    elif response is None:
                        answers.append(None)
                    else:
                        answers.append(self.encode_response(response, names))
        except Exception as exc:
            return ("done", exec_id, None, error_text(exc))
        finally:
            del requests
        return ("done", exec_id, answers, None)

    def _event_loop(self):
        import asyncio

        if self.loop is None:
            self.loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                                 name="model-event-loop")
            self._loop_thread.start()
        return self.loop

    def _submit(self, coroutine, requests) -> None:
        import asyncio

        future = asyncio.run_coroutine_threadsafe(coroutine, self._event_loop())
        keys = [(r._key, r._sender) for r in requests]

        def finished(done):
            exc = done.exception()
            if exc is None:
                return
            text = error_text(exc)
            self.log(2, f"Failed to process the request(s): {text}", "stub.py", 0)
            for key, sender in keys:
                if not sender._closed:
                    sender._closed = True
                    self.channel.send(("resp_error", key, text))

        future.add_done_callback(finished)

    def finalize(self) -> None:
        if self.model is not None and hasattr(self.model, "finalize"):
            self.model.finalize()


def _auto_complete(path: str, config_json: str) -> str:
    model_class = load_model_class(path)
    config = pb_utils.ModelConfig(config_json)
    if hasattr(model_class, "auto_complete_config"):
        result = model_class.auto_complete_config(config)
        if not isinstance(result, pb_utils.ModelConfig):
            raise pb_utils.TritonModelException(
                "auto_complete_config must return the pb_utils.ModelConfig it was given")
        config = result
    return json.dumps(config.as_dict())


def main(argv: list[str]) -> int:
    channel = Channel(int(argv[1]), Transport(f"stub{os.getpid()}"), pickle_ok=True)
    runtime = Runtime(channel)
    pb_utils._runtime = runtime
    first = channel.recv()
    if first[0] == "autocomplete":
        try:
            channel.send(("autocomplete_ok", _auto_complete(first[1], first[2])))
        except BaseException as exc:
            channel.send(("autocomplete_err", error_text(exc)))
        channel.close()
        return 0
    _, path, args = first
    # The server has gone when the channel ends: nothing can be answered any more.
    role = ReadRole(channel, runtime.dispatch, lambda: os._exit(0), "stub-reader")
    try:
        runtime.initialize(path, args)
    except BaseException as exc:
        channel.send(("init_err", error_text(exc)))
        os._exit(1)
    channel.send(("init_ok",))
    # The main thread reads while idle and runs each execute; the watcher reads meanwhile.
    work = runtime.work
    role.claim()
    while True:
        if not work:
            role.read_one()
            continue
        message = work.popleft()
        role.release()
        if message[0] == "exec":
            done = runtime.execute(message[1], message[2])
            # Read role first, then the answer: the next exec is then read here
            # directly instead of by the watcher and handed over.
            role.claim()
            channel.send(done)
            continue
        elif message[0] == "finalize":
            try:
                runtime.finalize()
            except BaseException as exc:
                runtime.log(2, f"finalize failed: {error_text(exc)}", "stub.py", 0)
            channel.send(("finalized",))
            # Threads the model left running must not keep the process alive.
            os._exit(0)
        role.claim()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
