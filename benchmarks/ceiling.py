"""The "ceiling": bare grpcio answering ModelInfer with a precomputed response.

No protobuf, no model: the request arrives as raw bytes and the response is a
bytes object prepared at start-up, chosen by the model name (a slice of the
request's first field). Whatever our server costs above this is ours.

    python benchmarks/ceiling.py --mode sync|aio --port P --response NAME=FILE ...
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from concurrent import futures

import grpc

SERVICE = "inference.GRPCInferenceService"
OPTIONS = [("grpc.max_send_message_length", 2**31 - 1),
           ("grpc.max_receive_message_length", 2**31 - 1),
           ("grpc.so_reuseport", 0)]


def _model_name(request: bytes) -> bytes:
    # field 1 (model_name) comes first: tag 0x0a, a one-byte length for short names
    return request[2:2 + request[1]]


def _handlers(responses: dict[bytes, bytes], is_async: bool) -> grpc.GenericRpcHandler:
    if is_async:
        async def infer(request, context):
            return responses[_model_name(request)]
    else:
        def infer(request, context):
            return responses[_model_name(request)]
    return grpc.method_handlers_generic_handler(
        SERVICE, {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)})


def serve_sync(address: str, responses: dict[bytes, bytes], threads: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads), options=OPTIONS)
    server.add_generic_rpc_handlers((_handlers(responses, False),))
    server.add_insecure_port(address)
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(1).wait()


async def serve_aio(address: str, responses: dict[bytes, bytes]) -> None:
    server = grpc.aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers((_handlers(responses, True),))
    server.add_insecure_port(address)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["sync", "aio"], required=True)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=16, help="sync: thread pool size")
    parser.add_argument("--response", action="append", required=True, metavar="NAME=FILE")
    args = parser.parse_args()
    responses = {}
    for item in args.response:
        name, path = item.split("=", 1)
        with open(path, "rb") as f:
            responses[name.encode()] = f.read()
    address = f"{args.address}:{args.port}"
    if args.mode == "sync":
        serve_sync(address, responses, args.threads)
    else:
        asyncio.run(serve_aio(address, responses))


if __name__ == "__main__":
    main()
