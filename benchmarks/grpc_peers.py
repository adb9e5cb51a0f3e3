"""Peer gRPC servers for ``run.py``: KServe 0.21 and MLServer 1.7.1.

Same environments as the HTTP peers (``http_peers.ensure_venv``: one virtual
environment per peer under ``benchmarks/.venvs``, made on first use from the pinned
``benchmarks/peers/<peer>-requirements.txt``). Both serve ``add_sub`` (INT32 [1,16]
x2 -> sum, difference) and ``identity_4m`` (FP32 [1,1048576] -> the same) with numpy
and answer in ``raw_output_contents``, as ours does, so the same pre-encoded frames
hit all servers. Each is one process: KServe ``workers=1``, MLServer
``parallel_workers=0`` (inference on its own event loop) with metrics off.
"""
from __future__ import annotations

import json
from pathlib import Path

import http_peers

MAX_MESSAGE = 2**31 - 1  # gRPC's own default (4 MiB) refuses identity_4m

KSERVE_GRPC_SERVER = '''
import argparse
import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


def _output(name, value, datatype):
    out = InferOutput(name=name, shape=list(value.shape), datatype=datatype)
    out.set_data_from_numpy(value, binary_data=True)  # raw_output_contents on gRPC
    return out


class AddSub(Model):
    def __init__(self):
        super().__init__("add_sub")
        self.ready = True

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        a = payload.inputs[0].as_numpy()
        b = payload.inputs[1].as_numpy()
        return InferResponse(model_name=self.name, response_id=payload.id or "",
                             infer_outputs=[_output("OUTPUT0", a + b, "INT32"),
                                            _output("OUTPUT1", a - b, "INT32")])


class Identity(Model):
    def __init__(self):
        super().__init__("identity_4m")
        self.ready = True

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        x = payload.inputs[0].as_numpy()
        return InferResponse(model_name=self.name, response_id=payload.id or "",
                             infer_outputs=[_output("OUTPUT0", x, "FP32")])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    args, _ = parser.parse_known_args()
    ModelServer(http_port=args.http_port, grpc_port=args.port, enable_grpc=True,
                workers=1).start([AddSub(), Identity()])
'''


def kserve_command(tmp: Path, port: int, http_port: int) -> list[str]:
    script = tmp / "kserve_grpc_peer.py"
    script.write_text(KSERVE_GRPC_SERVER)
    return [str(http_peers.ensure_venv("kserve")), str(script), "--port", str(port),
            "--http-port", str(http_port),
            # read by kserve's own parser at import; gRPC's 4 MiB default refuses identity_4m
            "--grpc_max_send_message_length", str(MAX_MESSAGE),
            "--grpc_max_receive_message_length", str(MAX_MESSAGE)]


def mlserver_command(tmp: Path, port: int, http_port: int) -> list[str]:
    root = tmp / "mlserver-grpc"
    root.mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(json.dumps({
        "http_port": http_port, "grpc_port": port, "metrics_endpoint": None,
        "parallel_workers": 0, "grpc_max_message_length": MAX_MESSAGE, "debug": False}))
    for name, implementation in (("add_sub", "AddSub"), ("identity_4m", "Identity")):
        model_dir = root / name
        model_dir.mkdir(exist_ok=True)
        # NumpyCodec outputs; MLServer answers raw when the request came raw.
        (model_dir / "peer_models.py").write_text(http_peers.MLSERVER_MODELS)
        (model_dir / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": f"peer_models.{implementation}"}))
    http_peers.ensure_venv("mlserver")
    return [str(http_peers.venv_python("mlserver").parent / "mlserver"), "start", str(root)]


PEERS = {"kserve": kserve_command, "mlserver": mlserver_command}
