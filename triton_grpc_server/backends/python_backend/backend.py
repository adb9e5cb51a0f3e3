"""The Python backend (``backend: "python"``): Triton's ``model.py`` models, one process per instance.

Each instance runs the model in its own process (:mod:`.stub`), so a model's
GIL, crash or hang cannot stall the server or other models. The processes of
a version start in parallel when it loads; ``auto_complete_config`` runs in a
short-lived process of its own, as in Triton.
"""
from __future__ import annotations

import ast
import json
import logging
import os
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..._proto import model_config_pb2 as mc
from ...errors import TritonError, Unsupported
from ...pb_stub.channel import Channel, socket_pair
from ...pb_stub.transport import Transport
from ..base import Backend
from .config_json import config_from_json, config_to_dict, config_to_json
from .instance import PythonInstance, how_it_ended, stub_command

log = logging.getLogger("triton_grpc_server.backends.python")

AUTO_COMPLETE_TIMEOUT_SECS = 60.0


def defines_auto_complete(model_file: Path) -> bool:
    """Whether model.py's TritonPythonModel defines auto_complete_config (read, not run)."""
    try:
        tree = ast.parse(model_file.read_text(), str(model_file))
    except (OSError, SyntaxError, ValueError):
        return True  # let the process report the problem
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "TritonPythonModel":
            return any(isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                       and item.name == "auto_complete_config" for item in node.body)
    return True  # defined some other way (imported, assigned): ask the process


def run_auto_complete(model_file: Path, config_json: str, name: str) -> str:
    ours, theirs = socket_pair()
    try:
        process = subprocess.Popen(stub_command(theirs), pass_fds=(theirs,),
                                   stdin=subprocess.DEVNULL, close_fds=True)
    finally:
        os.close(theirs)
    channel = Channel(ours, Transport(f"{name}-autocomplete"))
    try:
        channel.send(("autocomplete", str(model_file), config_json))
        try:
            reply = channel.recv()
        except (EOFError, OSError):
            process.wait(5)
            raise TritonError(f"auto-complete process of model '{name}' "
                              f"{how_it_ended(process.returncode)}") from None
    finally:
        channel.close()
        try:
            process.wait(AUTO_COMPLETE_TIMEOUT_SECS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if reply[0] != "autocomplete_ok":
        raise TritonError(f"auto-complete of model '{name}' failed: {reply[1]}")
    return reply[1]


def instance_names(config) -> list[str]:
    """Instance names in the order the repository creates instances: ``<group>_<n>``."""
    names = []
    for group in config.instance_group:
        kind = mc.ModelInstanceGroup.Kind.Name(group.kind)
        devices = list(group.gpus) or [0]
        for index in range(group.count):
            for _ in (devices if kind == "KIND_GPU" else [0]):
                names.append(f"{group.name}_{index}")
    return names


class PythonBackend(Backend):
    default_model_filename = "model.py"

    @classmethod
    def auto_complete_config(cls, config, model_path: Path) -> None:
        if not defines_auto_complete(model_path):
            return
        completed = run_auto_complete(model_path, config_to_json(config), config.name)
        try:
            new = config_from_json(completed, mc.ModelConfig)
        except Exception as exc:
            raise TritonError(f"auto-complete of model '{config.name}' returned an invalid "
                              f"config: {exc}") from None
        config.CopyFrom(new)

    def __init__(self, config, version: int, model_path: Path, context):
        super().__init__(config, version, model_path, context)
        if "EXECUTION_ENV_PATH" in config.parameters:
            raise Unsupported(
                f"model '{config.name}': EXECUTION_ENV_PATH (a per-model Python environment) is "
                "not supported by this server yet; the model runs with the server's Python")
        from ...repository.config import wire_datatype

        self.model_name = config.name
        self.decoupled = config.model_transaction_policy.decoupled
        self.input_datatypes = {t.name: wire_datatype(t) for t in config.input}
        self.config_json = json.dumps(config_to_dict(config))
        self._names = instance_names(config)
        self._instances: list[PythonInstance] = []
        # Start every instance process at once: each spends most of its start-up
        # importing, so they overlap instead of adding up.
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(8, len(self._names))),
                                        thread_name_prefix=f"python-load-{config.name}")
        groups = [(mc.ModelInstanceGroup.Kind.Name(g.kind), list(g.gpus) or [0])
                  for g in config.instance_group]
        self._starting: list[Future] = []
        index = 0
        for (kind, devices), group in zip(groups, config.instance_group):
            for _ in range(group.count):
                for device in (devices if kind == "KIND_GPU" else [0]):
                    self._starting.append(self._pool.submit(
                        PythonInstance, self, self._names[index], kind, device))
                    index += 1

    def create_instance(self, index: int, kind: str, device_id: int) -> PythonInstance:
        if index < len(self._starting):
            try:
                instance = self._starting[index].result()
            except BaseException:
                self.unload()  # the repository closes the instances it took; these it never will
                raise
        else:
            name = f"{self.model_name}_{index}"
            instance = PythonInstance(self, name, kind, device_id)
        self._instances.append(instance)
        return instance

    def initialize_args(self, instance: PythonInstance) -> dict:
        """Triton's ``args`` for ``initialize``: every value a string."""
        return {
            "model_config": self.config_json,
            "model_instance_kind": instance.kind.replace("KIND_", ""),
            "model_instance_name": instance.name,
            "model_instance_device_id": str(instance.device_id),
            "model_repository": str(self.model_path.parent.parent),
            "model_version": str(self.version),
            "model_name": self.model_name,
        }

    def dataplane(self):
        return getattr(self.context, "dataplane", None)

    def report_unavailable(self, reason: str) -> None:
        """Mark this version UNAVAILABLE with ``reason`` (an instance gave up restarting)."""
        dataplane = self.dataplane()
        if dataplane is None:
            return
        entry = dataplane.repository.entries().get(self.model_name)
        version = entry.versions.get(self.version) if entry is not None else None
        if version is not None and version.backend is self:
            version.state, version.reason = "UNAVAILABLE", reason
            if not any(v.ready for v in entry.versions.values()):
                entry.state, entry.reason = "UNAVAILABLE", reason
            log.error("model '%s' version %d is UNAVAILABLE: %s", self.model_name, self.version,
                      reason)

    def unload(self) -> None:
        # Processes started for instances the repository never took (a failed load).
        taken = set(map(id, self._instances))
        for future in self._starting:
            try:
                instance = future.result()
            except BaseException:
                continue
            if id(instance) not in taken:
                instance.close()
        self._pool.shutdown(wait=False)
