"""Peer REST servers for ``http_bench.py``: KServe 0.21 and MLServer 1.7.1.

Each peer lives in its own virtual environment under ``benchmarks/.venvs/<peer>``,
made on first use from the pinned ``benchmarks/peers/<peer>-requirements.txt``
(never a test dependency). Both serve the benchmark's two models with the same
arithmetic as ours: ``add_sub`` (INT32 [1,16] x2 -> sum, difference) and
``identity_4m`` (FP32 [1,1048576] -> the same).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"

KSERVE_SERVER = '''
import argparse
import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class AddSub(Model):
    def __init__(self):
        super().__init__("add_sub")
        self.ready = True

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        a = payload.inputs[0].as_numpy()
        b = payload.inputs[1].as_numpy()
        outputs = []
        for name, value in (("OUTPUT0", a + b), ("OUTPUT1", a - b)):
            out = InferOutput(name=name, shape=list(value.shape), datatype="INT32")
            out.set_data_from_numpy(value, binary_data=False)
            outputs.append(out)
        return InferResponse(model_name=self.name, infer_outputs=outputs, response_id=payload.id or "")


class Identity(Model):
    def __init__(self):
        super().__init__("identity_4m")
        self.ready = True

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        x = payload.inputs[0].as_numpy()
        out = InferOutput(name="OUTPUT0", shape=list(x.shape), datatype="FP32")
        out.set_data_from_numpy(x, binary_data=True)
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or "")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    args, _ = parser.parse_known_args()
    ModelServer(http_port=args.port, grpc_port=args.grpc_port, enable_grpc=False,
                workers=1).start([AddSub(), Identity()])
'''

MLSERVER_MODELS = '''
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class AddSub(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        a = NumpyCodec.decode_input(payload.inputs[0])
        b = NumpyCodec.decode_input(payload.inputs[1])
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=[
            NumpyCodec.encode_output("OUTPUT0", a + b), NumpyCodec.encode_output("OUTPUT1", a - b)])


class Identity(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        return InferenceResponse(model_name=self.name, id=payload.id,
                                 outputs=[NumpyCodec.encode_output("OUTPUT0", x)])
'''


def venv_python(peer: str) -> Path:
    return VENVS / peer / "bin" / "python"


def ensure_venv(peer: str) -> Path:
    """The peer's interpreter, creating its environment from the pinned requirements if needed."""
    python = venv_python(peer)
    marker = VENVS / peer / ".installed"
    requirements = HERE / "peers" / f"{peer}-requirements.txt"
    if marker.exists() and marker.read_text() == requirements.read_text():
        return python
    print(f"# creating {VENVS / peer} from {requirements.name} (first run only)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENVS / peer)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)],
                   check=True)
    marker.write_text(requirements.read_text())
    return python


def kserve_command(tmp: Path, port: int, grpc_port: int) -> list[str]:
    script = tmp / "kserve_peer.py"
    script.write_text(KSERVE_SERVER)
    return [str(ensure_venv("kserve")), str(script), "--port", str(port),
            "--grpc-port", str(grpc_port)]


def mlserver_command(tmp: Path, port: int, grpc_port: int) -> list[str]:
    root = tmp / "mlserver"
    root.mkdir(parents=True, exist_ok=True)
    # MLServer's defaults otherwise (one parallel inference worker process).
    (root / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": grpc_port, "metrics_endpoint": None,
        "debug": False}))
    for name, implementation in (("add_sub", "AddSub"), ("identity_4m", "Identity")):
        model_dir = root / name
        model_dir.mkdir(exist_ok=True)
        (model_dir / "peer_models.py").write_text(MLSERVER_MODELS)  # on the model's sys.path
        (model_dir / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": f"peer_models.{implementation}"}))
    mlserver = venv_python("mlserver").parent / "mlserver"
    ensure_venv("mlserver")
    return [str(mlserver), "start", str(root)]


PEERS = {"kserve": kserve_command, "mlserver": mlserver_command}
