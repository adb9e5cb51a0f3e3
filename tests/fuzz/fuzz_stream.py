"""The ModelStreamInfer message path: a real stream session over an in-process DataPlane.

The input is a sequence of messages (each a little-endian uint16 length and
that many bytes) sent on one stream to a server core serving ``add`` (FP32
[-1, 4], OUTPUT0 = INPUT0 + 1, ONNX Runtime). Property: the stream ends; every
message gets exactly one answer (a response or an in-band error); every answer
parses as a ModelStreamInferResponse; a successful answer is INPUT0 + 1.
"""
from __future__ import annotations

import asyncio
import struct
import tempfile
from pathlib import Path

import _harness  # noqa: F401  (paths)
import numpy as np

with _harness.instrumented():
    from triton_grpc_server.dataplane import DataPlane  # noqa: F401
    from triton_grpc_server.frontends import grpc as _grpc_frontend  # noqa: F401

NAME = "stream"
_state = {}


def frame(messages) -> bytes:
    return b"".join(struct.pack("<H", len(m)) + m for m in messages)


def unframe(data: bytes, limit: int = 8) -> list:
    messages, offset = [], 0
    while offset + 2 <= len(data) and len(messages) < limit:
        (size,) = struct.unpack_from("<H", data, offset)
        offset += 2
        messages.append(data[offset:offset + size])
        offset += size
    return messages


def _setup():
    if _state:
        return _state
    from scheduling_models import write_model
    from triton_grpc_server.dataplane import DataPlane
    from triton_grpc_server.frontends.codecs import load_codec
    from triton_grpc_server.repository import ModelRepository
    from triton_grpc_server.settings import Settings

    root = Path(tempfile.mkdtemp(prefix="tgs-fuzz-stream-"))
    write_model(root, "add", "add", "max_batch_size: 8\n")
    settings = Settings(model_repository=str(root))
    repository = ModelRepository(root, settings=settings)
    repository.load_all()
    _state.update(loop=asyncio.new_event_loop(), codec=load_codec("auto"),
                  dataplane=DataPlane(repository, settings))
    return _state


class _Context:
    def __init__(self):
        self.written = []

    async def write(self, message):
        self.written.append(message)

    async def abort(self, code, text):  # only with the triton_grpc_error header
        raise AssertionError(f"stream aborted: {code} {text}")


async def _messages(messages):
    for message in messages:
        yield message


def test_one_input(data: bytes) -> None:
    from triton_grpc_server._proto import grpc_service_pb2 as pb
    from triton_grpc_server.frontends.grpc import _Stream

    state = _setup()
    messages = unframe(data)
    context = _Context()

    async def run():
        stream = _Stream(state["dataplane"], state["codec"], context, False)
        await asyncio.wait_for(stream.serve(_messages(messages)), timeout=30)

    state["loop"].run_until_complete(run())
    assert len(context.written) == len(messages), (len(context.written), len(messages))
    # Answers of accepted requests come in request order; errors for undecodable
    # messages are written at once. Each success must match the next sent request
    # it can be the answer of (same id, OUTPUT0 == INPUT0 + 1).
    pending = iter(messages)
    for answer in context.written:
        reply = pb.ModelStreamInferResponse.FromString(answer)
        if reply.error_message:
            continue
        got = np.frombuffer(reply.infer_response.raw_output_contents[0], np.float32)
        for sent in pending:
            if _expected(sent, reply.infer_response.id, got):
                break
        else:
            raise AssertionError(f"answer {reply.infer_response} matches no request sent")


def _expected(sent: bytes, reply_id: str, got) -> bool:
    from triton_grpc_server._proto import grpc_service_pb2 as pb

    try:
        request = pb.ModelInferRequest.FromString(sent)
    except Exception:
        return False
    if request.id != reply_id or not request.inputs:
        return False
    if request.raw_input_contents:
        raw = request.raw_input_contents[0]
        if len(raw) % 4:  # not whole FP32 values: the server refused it, no answer of its
            return False
        values = np.frombuffer(raw, np.float32)
    else:
        values = np.asarray(request.inputs[0].contents.fp32_contents, np.float32)
    return values.shape == got.shape and bool(np.all((values + 1 == got) | np.isnan(got)))

if __name__ == "__main__":
    _setup()
    _harness.main(NAME, test_one_input)
