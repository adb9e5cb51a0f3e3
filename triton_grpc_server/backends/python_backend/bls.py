"""BLS: a request a Python model makes to another model, through the server's data plane.

The instance process sends the request with its inputs in shared memory; it
becomes an ordinary ``InferRequest`` (its raw inputs are views of that
memory, not copies) with a :class:`BlsSender` that writes each answer back
into the instance's shared pool.
"""
from __future__ import annotations

import json
import logging

import numpy as np

from ...errors import Status, TritonError

log = logging.getLogger("triton_grpc_server.backends.python")


class BlsSender:
    """Answers of one BLS request, sent back to the instance process that asked."""

    def __init__(self, stub, bls_id: int, streaming: bool):
        self.stub = stub
        self.bls_id = bls_id
        self.streaming = streaming  # a decoupled BLS call takes any number of responses

    def send(self, response, *, final: bool) -> None:
        outputs, parameters = None, "{}"
        if response is not None:
            encode = self.stub.transport.encode
            encode_raw = self.stub.transport.encode_raw
            outputs = []
            try:
                for tensor in response.outputs:
                    if tensor.datatype == "BYTES":
                        location = encode_raw(tensor.data)
                    else:
                        array = np.asarray(tensor.data)
                        location = encode(array.reshape(tensor.shape), tensor.datatype)[2]
                    outputs.append((tensor.name, tensor.datatype, tuple(tensor.shape), location))
            except Exception as exc:
                self.send_error(TritonError(f"{type(exc).__name__}: {exc}"), final=final)
                return
            if response.parameters:
                parameters = json.dumps({k: v for k, v in response.parameters.items()
                                         if isinstance(v, (bool, int, str))})
        self._send(outputs, None, final, parameters)

    def send_error(self, error: BaseException, *, final: bool = True) -> None:
        if isinstance(error, TritonError):
            code = error.status.name
            message = error.message
        else:
            code, message = Status.INTERNAL.name, f"{type(error).__name__}: {error}"
        self._send(None, (message, code), final, "{}")

    def _send(self, outputs, error, final, parameters) -> None:
        try:
            self.stub.send(("bls_resp", self.bls_id, outputs, error, final, parameters))
        except (OSError, EOFError):  # the asking process has gone
            pass


def run_bls(backend, stub, message: tuple) -> None:
    (_, bls_id, model_name, model_version, request_id, correlation_id, flags, timeout, inputs,
     output_names, parameters_json, decoupled) = message
    sender = BlsSender(stub, bls_id, decoupled)
    dataplane = backend.dataplane()
    version = "" if model_version is None or model_version < 0 else str(model_version)
    try:
        if dataplane is None:
            raise TritonError("BLS needs the server's data plane, which is not running")
        if not dataplane.model_ready(model_name, version):
            raise TritonError(f"Failed for execute the inference request. Model '{model_name}' "
                              "is not ready.")
        if not decoupled and dataplane.model_decoupled(model_name, version):
            raise TritonError(
                f"Model '{model_name}' is using the decoupled. The current BLS request call "
                "doesn't support models using the decoupled transaction policy. Please use "
                "'decoupled=True' argument to the 'exec' or 'async_exec' calls for decoupled "
                "models.", Status.INVALID_ARG)
        request = build_request(stub, model_name, version, request_id, correlation_id, flags,
                                timeout, inputs, output_names, parameters_json)
    except TritonError as exc:
        sender.send_error(exc)
        return
    except Exception as exc:
        sender.send_error(TritonError(f"{type(exc).__name__}: {exc}"))
        return
    request.sender = sender
    dataplane.enqueue(request)


def build_request(stub, model_name, version, request_id, correlation_id, flags, timeout, inputs,
                  output_names, parameters_json):
    from ..._ext.wire import InferInput, InferRequest, RequestedOutput

    parameters = json.loads(parameters_json) if parameters_json else {}
    if correlation_id:
        parameters["sequence_id"] = correlation_id
    if flags & 1:
        parameters["sequence_start"] = True
    if flags & 2:
        parameters["sequence_end"] = True
    if timeout:
        parameters["timeout"] = int(timeout)
    buffer = stub.transport.buffer
    return InferRequest(
        model_name=str(model_name), model_version=version, id=str(request_id or ""),
        parameters=parameters,
        inputs=[InferInput(name, datatype, list(shape)) for name, datatype, shape, _ in inputs],
        outputs=[RequestedOutput(name) for name in output_names],
        raw_input_contents=[memoryview(buffer(location)) for *_, location in inputs])
