"""Job specs with non-finite, negative or path-like values are refused before queueing."""

from __future__ import annotations

import math

import pytest

from services.common.errors import InvalidArgument
from services.training.spec import DatasetInput, JobSpec, validate, with_defaults


def _spec(**changes) -> JobSpec:
    spec = JobSpec(base_model="org/tiny", train=[DatasetInput("ds-1")])
    for path, value in changes.items():
        target = spec
        *parents, name = path.split(".")
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, value)
    return with_defaults(spec)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lora.alpha": math.nan}, "lora.alpha"),
        ({"lora.alpha": math.inf}, "lora.alpha"),
        ({"lora.alpha": -1e30}, "lora.alpha"),
        ({"hyperparameters.seed": -1}, "seed"),
        ({"hyperparameters.seed": 2**40}, "seed"),
        ({"hyperparameters.trainable_last_layers": -3}, "trainable_last_layers"),
        ({"lora.last_layers": -1}, "lora.last_layers"),
        ({"lora.last_layers": 2**31 - 1}, "lora.last_layers"),
        ({"train": [DatasetInput("ds-1", math.inf)]}, "dataset weights"),
        ({"train": [DatasetInput("ds-1", math.nan)]}, "dataset weights"),
        ({"train": [DatasetInput("ds-1", -1.0)]}, "dataset weights"),
        ({"lora.target_modules": ["../../x"]}, "not a module name"),
        ({"lora.target_modules": ["q_proj", "/etc/passwd"]}, "not a module name"),
        ({"lora.target_modules": ["(a+)+$"]}, "not a module name"),
        ({"lora.target_modules": ["q_proj\n"]}, "not a module name"),
        ({"lora.target_modules": [f"m{i}" for i in range(65)]}, "at most 64"),
        ({"hyperparameters.learning_rate": math.nan}, "learning_rate"),
        ({"hyperparameters.epochs": math.inf}, "epochs"),
        ({"lora.dropout": math.nan}, "lora.dropout"),
        ({"validation_ratio": math.nan}, "validation_ratio"),
        ({"base_model": "org/tiny\n"}, "base_model"),
        ({"publish.adapter_name": "acme/x\n"}, "adapter_name"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(changes, message):
    with pytest.raises(InvalidArgument) as err:
        validate(_spec(**changes), "acme")
    assert message in err.value.message


def test_reasonable_specs_pass():
    validate(_spec(), "acme")
    validate(
        _spec(
            **{
                "lora.alpha": 32.0,
                "hyperparameters.seed": 0,
                "lora.target_modules": ["q_proj", "self_attn.v_proj", "layers.0.mlp.up_proj"],
                "train": [DatasetInput("ds-1", 3.5)],
                "publish.adapter_name": "acme/colors",
            }
        ),
        "acme",
    )
