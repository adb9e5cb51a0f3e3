"""Say what to run when the package is used from a checkout that was never built.

The protobuf modules in ``_proto/`` are generated at build time and never
committed, so ``python -m triton_grpc_server`` straight from a fresh clone
would otherwise die deep inside an import with ``cannot import name
'model_config_pb2'``. One line naming the command that builds it is kinder.
"""
from __future__ import annotations

import importlib.util
from typing import Optional

_GENERATED = ("triton_grpc_server._proto.model_config_pb2",
              "triton_grpc_server._proto.grpc_service_pb2",
              "triton_grpc_server._proto.grpc_service_pb2_grpc")


def missing_build_message() -> Optional[str]:
    """The one-line message when generated modules are missing, else None."""
    missing = [name for name in _GENERATED if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return ("error: triton_grpc_server is not built here (generated module "
            f"{missing[0].rsplit('.', 1)[1]} is missing): run `make setup` in the checkout, "
            "or `pip install -e .`, or install the wheel with `pip install triton-grpc-server`")
