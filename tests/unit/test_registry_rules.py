"""Registry rules that need no server: names, references, compatibility, config parsing."""

from __future__ import annotations

import json

import pytest

from services.common.adapter_ref import parse_ref, validate_alias
from services.common.errors import InvalidArgument
from services.registry.compat import incompatibilities, same_base_model
from services.registry.names import validate_file_path
from services.registry.peft_files import check_file_names, parse_config


def test_references():
    assert str(parse_ref("acme/bot")) == "acme/bot"
    assert parse_ref("acme/bot@latest").version is None
    assert parse_ref("acme/bot@3").version == 3
    assert parse_ref("acme/bot@prod").alias == "prod"
    for bad in ("acme", "/bot", "Acme/bot", "acme/bot@", "acme/../x", "acme/.hidden", "a/b@0"):
        with pytest.raises(InvalidArgument):
            parse_ref(bad)


@pytest.mark.parametrize("path", ["../x.json", "/abs.json", "a/../b.json", "a\\b.json", ".x", ""])
def test_file_paths_cannot_escape(path):
    with pytest.raises(InvalidArgument):
        validate_file_path(path)


def test_aliases():
    assert validate_alias("prod") == "prod"
    for bad in ("latest", "1", "-x", "a" * 64, "a b"):
        with pytest.raises(InvalidArgument):
            validate_alias(bad)


def test_file_kinds():
    check_file_names(["adapter_config.json", "adapter_model.safetensors", "README.md"])
    for names in (
        ["adapter_config.json", "adapter_model.bin"],
        ["adapter_config.json", "model.ckpt"],
        ["adapter_config.json", "run.sh", "adapter_model.safetensors"],
        ["adapter_model.safetensors"],
        ["adapter_config.json"],
    ):
        with pytest.raises(InvalidArgument):
            check_file_names(names)


def test_base_model_matching():
    assert same_base_model("HuggingFaceTB/SmolLM2-135M-Instruct", "/models/SmolLM2-135M-Instruct/")
    assert not same_base_model("org/a", "org/b")
    assert not same_base_model("", "org/a")


def test_regex_targets_and_types(tmp_path):
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({"peft_type": "lora", "r": 4, "target_modules": ".*proj"}))
    info = parse_config(path)
    assert info.peft_type == "LORA" and info.target_modules_is_regex
    assert incompatibilities(info, available_modules=["q_proj"]) == []
    assert incompatibilities(info, available_modules=["mlp"]) != []
    path.write_text(json.dumps({"peft_type": "LORA", "r": "x"}))
    with pytest.raises(InvalidArgument):
        parse_config(path)
    path.write_text("[1, 2]")
    with pytest.raises(InvalidArgument):
        parse_config(path)
