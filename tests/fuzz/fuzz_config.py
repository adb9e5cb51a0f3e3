"""config.pbtxt parsing, auto-complete through the ONNX Runtime backend, validation.

The input is the text of a config.pbtxt in a model directory that holds a real
ONNX model (``add``: FP32 [-1, 4] -> [-1, 4]). Property: reading, completing
and validating it either succeeds with a config that names the model, only
files inside its directory and only enum values their enums have names for, or
raises one of the server's errors; nothing else.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

import _harness  # noqa: F401  (paths)

with _harness.instrumented():
    from triton_grpc_server.errors import TritonError
    from triton_grpc_server.repository import config as cfg
    from triton_grpc_server.repository.manager import model_files
    from triton_grpc_server.backends import onnxruntime as _ort_backend  # noqa: F401

NAME = "config"
_dirs = {}


def _model_dir() -> Path:
    if not _dirs:
        from scheduling_models import write_model

        root = Path(tempfile.mkdtemp(prefix="tgs-fuzz-config-"))
        write_model(root, "add", "add", "max_batch_size: 8\n")
        _dirs["model"] = root / "add"
    return _dirs["model"]


def _unnamed_enums(message, as_dict, path=""):
    """Paths of enum values protobuf's JSON printer could not name (it writes those as numbers;
    a named one as its name)."""
    for field in message.DESCRIPTOR.fields:
        if field.name not in as_dict:
            continue
        value, where = as_dict[field.name], path + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            items = [(value_field, getattr(message, field.name)[_key(field, k)], v)
                     for k, v in value.items()]
        elif field.is_repeated:
            items = [(field, m, v) for m, v in zip(getattr(message, field.name), value)]
        else:
            items = [(field, getattr(message, field.name), value)]
        for item_field, item, item_dict in items:
            if item_field.message_type is not None:
                yield from _unnamed_enums(item, item_dict, where + ".")
            elif item_field.enum_type is not None and isinstance(item_dict, int):
                yield where


def _key(map_field, key: str):
    """A map key as the JSON printer wrote it (a string) back to the key's own type."""
    key_field = map_field.message_type.fields_by_name["key"]
    return key if key_field.type == FieldDescriptor.TYPE_STRING else int(key)


def test_one_input(data: bytes) -> None:
    model_dir = _model_dir()
    (model_dir / "config.pbtxt").write_bytes(data)
    try:
        config = cfg.read_config(model_dir)
        config, _ = cfg.complete_config(config, "add", model_dir,
                                        lambda c: model_files(model_dir, c, [1]), True)
    except TritonError:
        return
    assert config.name == "add"
    unnamed = list(_unnamed_enums(config, json_format.MessageToDict(
        config, preserving_proto_field_name=True)))
    assert not unnamed, f"accepted enum numbers without a name: {unnamed}"
    root = os.path.realpath(model_dir)
    for path in model_files(model_dir, config, [1]):
        assert os.path.commonpath([root, os.path.realpath(path)]) == root


if __name__ == "__main__":
    _model_dir()
    _harness.main(NAME, test_one_input)
