"""`loraplex ask` against the real suite: streamed answer, adapter and sources beneath it."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from loraplex.cli.main import app
from services.common.testing import TEST_TENANT_KEYS
from tests.integration.inference.conftest import MODEL_NAME
from tests.integration.inference.helpers import push_adapter
from tests.integration.inference.test_generation import _ingest
from tests.tiny_llm import make_random_lora

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_ask_streams_answer_and_prints_sources(served, tiny_model, tmp_path):
    await push_adapter(
        served, "acme", "acme/support",
        make_random_lora(tmp_path / "lora", tiny_model, base_model_name=MODEL_NAME),
        aliases=["prod"],
    )  # fmt: skip
    await _ingest(served, "acme", "handbook")

    def ask(tenant: str, *args: str):
        env = {
            "LORAPLEX_INFERENCE_ADDR": served.inference.target,
            "LORAPLEX_API_KEY": TEST_TENANT_KEYS[tenant],
        }
        return CliRunner().invoke(app, ["ask", *args], env=env)

    result = await asyncio.to_thread(
        ask, "acme", "Who approves a trip abroad?", "--adapter", "acme/support@prod",
        "--collection", "handbook", "--top-k", "2", "--max-tokens", "16", "--abstain", "refuse",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "acme/support@1" in result.output
    assert "sources" in result.output and "Travel" in result.output
    # the random adapter's noise is supported by nothing: the checked answer is the refusal
    assert "The sources do not say." in result.output and "not supported" in result.output
    assert "support" in result.output
    bad = await asyncio.to_thread(
        ask, "acme", "hi", "--collection", "handbook", "--abstain", "sometimes"
    )
    assert bad.exit_code == 2, bad.output
    denied = await asyncio.to_thread(
        ask, "globex", "hi", "--adapter", "acme/support@prod", "--max-tokens", "4"
    )
    assert denied.exit_code == 4, denied.output
