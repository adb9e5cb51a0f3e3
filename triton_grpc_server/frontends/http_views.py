"""The JSON documents of Triton's non-inference REST routes.

Each function turns a data-plane value into the dict Triton's core serializes
for that route (``TRITONSERVER_Message`` JSON), with the same field names.
"""
from __future__ import annotations

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

_INT64_TYPES = frozenset({FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64,
                          FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_FIXED64,
                          FieldDescriptor.TYPE_SFIXED64})


def server_metadata(name: str, version: str, extensions: list[str]) -> dict:
    return {"name": name, "version": version, "extensions": extensions}


def model_metadata(meta) -> dict:
    def tensors(items):
        return [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in items]
    return {"name": meta.name, "versions": meta.versions, "platform": meta.platform,
            "inputs": tensors(meta.inputs), "outputs": tensors(meta.outputs)}


def model_config(config) -> dict | None:
    """The ModelConfig as Triton's REST API shows it: proto field names, every field with its
    default present (``image_client.py`` reads ``max_batch_size`` and ``format``), and 64-bit
    integers as JSON numbers rather than protobuf's strings. ``None`` for an empty config."""
    if config.ByteSize() == 0:
        return None
    document = json_format.MessageToDict(config, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)
    _numbers_for_int64(config.DESCRIPTOR, document)
    return document


def _numbers_for_int64(descriptor, document: dict) -> None:
    """Walk ``document`` beside its message descriptor, turning int64 strings into ints."""
    for key, value in document.items():
        field = descriptor.fields_by_name.get(key)
        if field is None:
            continue
        if field.message_type is not None:
            entry = field.message_type
            if entry.GetOptions().map_entry:  # a map: values by the entry's 'value' field
                value_field = entry.fields_by_name["value"]
                for map_key, item in value.items():
                    if value_field.message_type is not None:
                        _numbers_for_int64(value_field.message_type, item)
                    elif value_field.type in _INT64_TYPES:
                        value[map_key] = int(item)
            elif isinstance(value, list):
                for item in value:
                    _numbers_for_int64(entry, item)
            else:
                _numbers_for_int64(entry, value)
        elif field.type in _INT64_TYPES:
            document[key] = [int(v) for v in value] if isinstance(value, list) else int(value)


def repository_index(rows) -> list[dict]:
    """Index rows; a model never loaded has only its name, as in Triton."""
    index = []
    for name, version, state, reason in rows:
        entry = {"name": name}
        if version:
            entry["version"] = version
        if state:
            entry["state"] = state
        if reason:
            entry["reason"] = reason
        index.append(entry)
    return index


def _duration(d) -> dict:
    return {"count": d.count, "ns": d.ns}


def model_statistics(rows) -> dict:
    stats = []
    for name, version, s in rows:
        stats.append({
            "name": name, "version": str(version), "last_inference": s.last_inference_ms,
            "inference_count": s.inference_count, "execution_count": s.execution_count,
            "inference_stats": {
                "success": _duration(s.success), "fail": _duration(s.fail),
                "queue": _duration(s.queue), "compute_input": _duration(s.compute_input),
                "compute_infer": _duration(s.compute_infer),
                "compute_output": _duration(s.compute_output),
                "cache_hit": {"count": 0, "ns": 0}, "cache_miss": {"count": 0, "ns": 0}},
            "response_stats": {},
            "batch_stats": [{"batch_size": size, "compute_input": _duration(b.compute_input),
                             "compute_infer": _duration(b.compute_infer),
                             "compute_output": _duration(b.compute_output)}
                            for size, b in sorted(s.batch_stats.items())],
            "memory_usage": [],
        })
    return {"model_stats": stats}
