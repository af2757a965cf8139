"""The service's gRPC messages (app/grpc/inference.proto, written for it) are the protocol's on the
wire: every field has the number, type and cardinality of the same field in the messages that
Triton publishes in tritonclient (`service_pb2`, `model_config_pb2`)."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor
from tritonclient.grpc import model_config_pb2, service_pb2

from app.grpc import inference_pb2
from app.grpc.server import _METHODS, SERVICE


def _theirs(name: str) -> Descriptor:
    for module in (service_pb2, model_config_pb2):
        if name in module.DESCRIPTOR.message_types_by_name:
            return module.DESCRIPTOR.message_types_by_name[name]
    raise KeyError(name)


def _nested(ours: Descriptor, theirs: Descriptor) -> list[tuple[Descriptor, Descriptor]]:
    pairs = [(ours, theirs)]
    for child in ours.nested_types:
        pairs += _nested(child, theirs.nested_types_by_name[child.name])
    return pairs


def _enum_values(enum: EnumDescriptor) -> dict[str, int]:
    return {value.name: value.number for value in enum.values}


@pytest.mark.parametrize("name", sorted(inference_pb2.DESCRIPTOR.message_types_by_name))
def test_each_field_has_the_protocols_number_type_and_cardinality(name: str) -> None:
    ours = inference_pb2.DESCRIPTOR.message_types_by_name[name]
    for mine, reference in _nested(ours, _theirs(name)):
        for field in mine.fields:
            other = reference.fields_by_name[field.name]
            assert (field.number, field.type, field.is_repeated) == (
                other.number,
                other.type,
                other.is_repeated,
            ), f"{mine.full_name}.{field.name}"
            if field.message_type is not None:
                assert field.message_type.name == other.message_type.name
            if field.enum_type is not None:  # each value we name means what it means to Triton
                assert _enum_values(field.enum_type).items() <= _enum_values(other.enum_type).items()


def test_the_service_answers_under_the_protocols_name_and_methods() -> None:
    triton = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert triton.full_name == SERVICE
    for method, (request, response) in _METHODS.items():
        theirs = triton.methods_by_name[method]
        assert (theirs.input_type.name, theirs.output_type.name) == (
            request.DESCRIPTOR.name,
            response.DESCRIPTOR.name,
        )
