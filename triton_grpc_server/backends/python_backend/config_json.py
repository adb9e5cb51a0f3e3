"""The model config as the JSON a Python model reads (``args["model_config"]``).

Protobuf's JSON mapping writes 64-bit integers as strings; Triton's models
read ``dims`` and the like as numbers, so those fields are turned back into
ints. Every field is present (defaults included), as model code such as
``auto_complete_config`` indexes ``config["input"]`` without checking.
"""
from __future__ import annotations

import json

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}


def _repeated(field) -> bool:
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return flag() if callable(flag) else flag
    return field.label == FieldDescriptor.LABEL_REPEATED


def _ints(value, descriptor):
    """Walk a message dict beside its descriptor, int64 strings -> ints."""
    if not isinstance(value, dict):
        return value
    for name, item in value.items():
        field = descriptor.fields_by_name.get(name)
        if field is None:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            entry = field.message_type
            if entry.GetOptions().map_entry:
                value_field = entry.fields_by_name["value"]
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    for key in item:
                        _ints(item[key], value_field.message_type)
                elif value_field.type in _INT64:
                    for key in item:
                        item[key] = int(item[key])
            elif _repeated(field):
                for element in item:
                    _ints(element, entry)
            else:
                _ints(item, entry)
        elif field.type in _INT64:
            value[name] = [int(v) for v in item] if isinstance(item, list) else int(item)
    return value


def config_to_dict(config) -> dict:
    data = json_format.MessageToDict(config, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)
    return _ints(data, config.DESCRIPTOR)


def config_to_json(config) -> str:
    return json.dumps(config_to_dict(config))


def config_from_json(text: str, message_class):
    message = message_class()
    json_format.ParseDict(json.loads(text), message)
    return message
