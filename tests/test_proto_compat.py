"""Our protos against the descriptors that ship inside tritonclient.

Every message, enum and RPC of tritonclient's ``grpc_service.proto`` and
``model_config.proto`` must exist in ours with the same field names, numbers,
types, labels, oneofs and map-ness, so the two are wire compatible.
"""
import pytest
from tritonclient.grpc import model_config_pb2 as theirs_config
from tritonclient.grpc import service_pb2 as theirs_service

from triton_grpc_server._proto import grpc_service_pb2 as ours_service
from triton_grpc_server._proto import model_config_pb2 as ours_config

PAIRS = [(ours_service.DESCRIPTOR, theirs_service.DESCRIPTOR),
         (ours_config.DESCRIPTOR, theirs_config.DESCRIPTOR)]


def _messages(container, prefix=""):
    for message in container.message_types_by_name.values() if prefix == "" else container.nested_types:
        yield message
        yield from _messages(message, prefix=message.full_name)


def _field_signature(field):
    type_name = ""
    if field.message_type is not None:
        type_name = field.message_type.full_name
    elif field.enum_type is not None:
        type_name = field.enum_type.full_name
    return (field.number, field.type, type_name, field.is_repeated,
            field.containing_oneof.name if field.containing_oneof else None)


def _all_enums(file_descriptor):
    enums = list(file_descriptor.enum_types_by_name.values())
    for message in _messages(file_descriptor):
        enums.extend(message.enum_types)
    return enums


@pytest.mark.parametrize("ours,theirs", PAIRS, ids=["grpc_service", "model_config"])
def test_every_message_matches_field_by_field(ours, theirs):
    assert ours.package == theirs.package == "inference"
    assert ours.name == theirs.name
    our_messages = {m.full_name: m for m in _messages(ours)}
    their_messages = {m.full_name: m for m in _messages(theirs)}
    assert set(our_messages) >= set(their_messages), set(their_messages) - set(our_messages)
    for name, their_message in their_messages.items():
        our_message = our_messages[name]
        their_fields = {f.name: _field_signature(f) for f in their_message.fields}
        our_fields = {f.name: _field_signature(f) for f in our_message.fields}
        assert our_fields == their_fields, name
        assert our_message.GetOptions().map_entry == their_message.GetOptions().map_entry, name


@pytest.mark.parametrize("ours,theirs", PAIRS, ids=["grpc_service", "model_config"])
def test_every_enum_matches(ours, theirs):
    our_enums = {e.full_name: {v.name: v.number for v in e.values} for e in _all_enums(ours)}
    their_enums = {e.full_name: {v.name: v.number for v in e.values} for e in _all_enums(theirs)}
    assert our_enums == their_enums


def test_service_has_every_rpc_with_same_types_and_streaming():
    ours = ours_service.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = theirs_service.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    def table(service):
        return {m.name: (m.input_type.full_name, m.output_type.full_name,
                         m.client_streaming, m.server_streaming) for m in service.methods}
    assert table(ours) == table(theirs)
    assert len(table(ours)) == 20


def test_messages_cross_parse_byte_for_byte():
    """A message serialized by one side parses to the same bytes on the other."""
    from google.protobuf import text_format

    text = """
      model_name: "m" model_version: "2" id: "x"
      parameters { key: "p" value { uint64_param: 18446744073709551615 } }
      inputs { name: "I" datatype: "BYTES" shape: [2, 3]
               contents { bytes_contents: ["a", "\\000\\377"] } }
      outputs { name: "O" parameters { key: "classification" value { int64_param: 3 } } }
      raw_input_contents: "\\001\\002"
    """
    ours = text_format.Parse(text, ours_service.ModelInferRequest())
    theirs = theirs_service.ModelInferRequest.FromString(ours.SerializeToString())
    assert theirs.SerializeToString(deterministic=True) == ours.SerializeToString(deterministic=True)
    assert text_format.MessageToString(theirs) == text_format.MessageToString(ours)


def test_our_modules_do_not_touch_the_default_pool():
    """tritonclient owns 'grpc_service.proto' in the default pool; ours live in a private one."""
    from google.protobuf import descriptor_pool

    default = descriptor_pool.Default()
    assert default.FindFileByName("grpc_service.proto") is theirs_service.DESCRIPTOR
    assert ours_service.DESCRIPTOR is not theirs_service.DESCRIPTOR
