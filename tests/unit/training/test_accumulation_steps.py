"""gradient_accumulation_steps: unset means 1, an explicit 0 is refused (gRPC and JSON alike)."""

from __future__ import annotations

import pytest

from loraplex.training.v1 import training_service_pb2 as pb
from services.common.errors import InvalidArgument
from services.training.convert import spec_from_pb
from services.training.spec import DatasetInput, Hyperparameters, JobSpec, validate, with_defaults


def _checked(spec: JobSpec) -> JobSpec:
    spec = with_defaults(spec)
    validate(spec, "acme")
    return spec


def _pb(**hp) -> pb.JobSpec:
    return pb.JobSpec(
        base_model="tiny",
        method=pb.METHOD_LORA,
        train=[pb.DatasetInput(dataset_id="d")],
        hyperparameters=pb.Hyperparameters(**hp),
    )


def test_unset_is_one_on_every_path():
    assert _checked(spec_from_pb(_pb())).hyperparameters.gradient_accumulation_steps == 1
    spec = JobSpec.from_dict({"base_model": "tiny", "train": [{"dataset_id": "d"}]})
    assert _checked(spec).hyperparameters.gradient_accumulation_steps == 1
    assert (
        _checked(
            spec_from_pb(_pb(gradient_accumulation_steps=4))
        ).hyperparameters.gradient_accumulation_steps
        == 4
    )


def test_an_explicit_zero_is_refused_not_silently_made_one():
    with pytest.raises(InvalidArgument, match="gradient_accumulation_steps must be in"):
        _checked(spec_from_pb(_pb(gradient_accumulation_steps=0)))
    spec = JobSpec(
        base_model="tiny",
        train=[DatasetInput("d")],
        hyperparameters=Hyperparameters(gradient_accumulation_steps=0),
    )
    with pytest.raises(InvalidArgument, match="gradient_accumulation_steps must be in"):
        _checked(spec)
