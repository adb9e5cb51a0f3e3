"""The same REST app served by granian's embedded server (the library the frontend was
measured against; ``http_bench.py`` starts this as the ``ours-granian`` variant).

    python benchmarks/http_granian.py --model-repository DIR --http-port PORT
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-repository", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    args = parser.parse_args()

    from granian.constants import Interfaces
    from granian.server.embed import Server

    from triton_grpc_server.dataplane import DataPlane
    from triton_grpc_server.frontends.http_app import TritonHttpApp
    from triton_grpc_server.repository import ModelRepository
    from triton_grpc_server.server import load_startup_models
    from triton_grpc_server.settings import Settings

    settings = Settings(model_repository=Path(args.model_repository), strict_model_config=True)
    repository = ModelRepository(settings.model_repository, auto_complete=False, settings=settings)
    control = load_startup_models(repository, settings)
    app = TritonHttpApp(DataPlane(repository, settings, control=control), settings)

    async def asgi(scope, receive, send):
        async def send_bytes(message):  # granian takes bytes bodies only
            body = message.get("body")
            if body is not None and not isinstance(body, bytes):
                message = dict(message, body=bytes(body))
            await send(message)
        await app(scope, receive, send_bytes)

    async def serve():
        server = Server(asgi, address="127.0.0.1", port=args.http_port,
                        interface=Interfaces.ASGINL, log_enabled=False, backlog=2048)
        print("READY", flush=True)
        await server.serve()

    if os.environ.get("HTTP_BENCH_UVLOOP") == "1":  # granian's own CLI picks uvloop
        import uvloop

        uvloop.run(serve())
    else:  # the loop the server runs every frontend on
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
