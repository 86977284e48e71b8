"""Registry rules that need no server: names, references, compatibility, config parsing."""

from __future__ import annotations

import json
import time

import pytest

from services.common.adapter_ref import parse_ref, validate_alias
from services.common.errors import FailedPrecondition, InvalidArgument
from services.registry.compat import incompatibilities, same_base_model
from services.registry.metadata import check_metadata
from services.registry.names import validate_file_path
from services.registry.patterns import matches_any, validate_pattern
from services.registry.peft_files import PeftInfo, check_file_names, parse_config


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


def test_patterns_are_checked_at_push_and_matched_within_a_budget():
    assert validate_pattern(r".*\.(q_proj|v_proj)") == r".*\.(q_proj|v_proj)"
    for bad in ("(", "a" * 2000, "[z-a]"):
        with pytest.raises(InvalidArgument):
            validate_pattern(bad)
    assert matches_any(r"(q|v)_proj", ["o_proj", "v_proj"])
    assert not matches_any(r"(q|v)_proj", ["o_proj"])
    with pytest.raises(FailedPrecondition, match="not a valid regular expression"):
        matches_any("(", ["q_proj"])  # stored by a registry from before the push check
    started = time.monotonic()
    with pytest.raises(FailedPrecondition, match="too costly"):
        matches_any("(a|aa)+$", ["a" * 60 + "!"] * 10, budget=0.2)
    assert time.monotonic() - started < 30, "bounded, not exponential"


def test_config_numbers_must_be_finite_and_sane(tmp_path):
    path = tmp_path / "adapter_config.json"
    for raw in (
        '{"peft_type": "LORA", "r": 1e400}',
        '{"peft_type": "LORA", "r": -1}',
        '{"peft_type": "LORA", "r": 8.5}',
        '{"peft_type": "LORA", "r": true}',
        '{"peft_type": "LORA", "lora_alpha": 1e400}',
        '{"peft_type": "LORA", "lora_alpha": NaN}',
        '{"peft_type": "LORA", "alpha_pattern": {"q": 1e300}}',
        '{"peft_type": "LORA", "rank_pattern": {"q": -4}}',
        '{"peft_type": "LORA", "x": ' + "[" * 300_000 + "]" * 300_000 + "}",
    ):
        path.write_text(raw)
        with pytest.raises(InvalidArgument):
            parse_config(path)
    path.write_text('{"peft_type": "LORA", "r": 8.0, "lora_alpha": 16, "rank_pattern": {"q": 4}}')
    assert (parse_config(path).rank, parse_config(path).alpha) == (8, 16.0)


def test_stored_configs_from_before_the_checks_still_read():
    info = PeftInfo.from_config(
        {"peft_type": "LORA", "r": float("inf"), "lora_alpha": float("nan"), "target_modules": 5}
    )
    assert (info.rank, info.alpha, info.target_modules) == (0, 0.0, ())


def test_metadata_bounds():
    lineage = {"training_job": "j" * 32, "hyperparameters": json.dumps({"lr": 1e-4} | {"x": "y"})}
    check_metadata(lineage, {"loss": 1.5}, "a description")
    for args in (
        ({"notes": "x" * (16 * 1024 + 1)}, {}, ""),
        ({f"k{i}": "v" * 1000 for i in range(70)}, {}, ""),
        ({"": "v"}, {}, ""),
        ({"bad\nkey": "v"}, {}, ""),
        ({}, {"loss": float("nan")}, ""),
        ({}, {}, "d" * 3000),
    ):
        with pytest.raises(InvalidArgument):
            check_metadata(*args)
