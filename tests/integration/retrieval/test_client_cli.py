"""The SDK and the `loraplex docs` CLI against a real server (sync clients run in a thread)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loraplex.cli.docs import app as docs_app
from loraplex.client.base import LoraplexClientError
from loraplex.client.retrieval import RetrievalClient
from services.common.testing import TEST_TENANT_KEYS

pytestmark = pytest.mark.integration


def _sdk_round_trip(target: str) -> None:
    with RetrievalClient(target, TEST_TENANT_KEYS["acme"]) as client:
        made = client.create_collection("sdk", index_kind="hnsw", chunk_size_tokens=32)
        assert made.chunk_size_tokens == 32
        seen: list[tuple[int, int, int]] = []
        docs = (
            {"id": f"n{i}", "text": f"Note {i} on orbital mechanics.", "metadata": {"p": i % 2}}
            for i in range(10)
        )
        final = client.upsert("sdk", docs, batch_size=3, progress_cb=lambda *a: seen.append(a))
        assert final.done and final.documents_written == 10 and final.revision == 4
        assert seen[-1] == (10, 10, 10) and len(seen) > 4
        hits = client.search("sdk", "orbital mechanics", top_k=10, where={"p": ["1"]})
        assert sorted(c.document_id for c in hits.chunks) == ["n1", "n3", "n5", "n7", "n9"]
        assert client.delete_documents("sdk", where={"p": "0"}).documents_deleted == 5
        assert client.stats("sdk").documents == 5
        assert [c.name for c in client.list_collections(page_size=1)] == ["sdk"]
        with pytest.raises(LoraplexClientError) as err:
            client.upsert("sdk", [{"id": "x", "text": ""}])
        assert err.value.message == "document 'x' has empty text"
        client.delete_collection("sdk")
        with pytest.raises(LoraplexClientError) as err:
            client.get_collection("sdk")
        assert err.value.code.name == "NOT_FOUND"


async def test_sdk_round_trip(served):
    await asyncio.to_thread(_sdk_round_trip, served.running.target)


def _cli(target: str, root: Path) -> None:
    runner = CliRunner()
    env = {"LORAPLEX_RETRIEVAL_ADDR": target, "LORAPLEX_API_KEY": TEST_TENANT_KEYS["acme"]}

    def run(*args: str):
        result = runner.invoke(docs_app, list(args), env=env)
        result.text = " ".join(result.output.split())  # rich wraps long lines
        return result

    (root / "kb").mkdir()
    (root / "kb" / "tides.md").write_text("# Tides\n\nThe moon's gravity raises ocean tides.\n")
    (root / "kb" / "notes.txt").write_text("Sourdough needs a lively starter.")
    (root / "kb" / "skip.bin").write_bytes(b"\x00\x01")
    lines = [
        {"id": "faq-1", "text": "Reset the router by holding the button.", "metadata": {"t": "it"}},
        {"text": "Invoices are sent monthly.", "metadata": {"t": "billing"}},
    ]
    (root / "faq.jsonl").write_text("\n".join(json.dumps(x) for x in lines))

    assert run("create", "kb", "--chunk-size", "64").exit_code == 0
    done = run("ingest", "kb", str(root / "kb"), str(root / "faq.jsonl"), "--meta", "src=cli")
    assert done.exit_code == 0, done.output
    assert "ingested 4 documents" in done.text

    found = run("search", "kb", "what causes tides?", "-k", "1", "--json")
    assert found.exit_code == 0, found.output
    top = json.loads(found.output)
    assert top["source"]["title"] == "Tides" and top["metadata"] == {"src": "cli"}
    assert top["source"]["uri"].endswith("tides.md")
    billing = run("search", "kb", "router", "--where", "t=billing", "--json")
    assert json.loads(billing.output)["document_id"].endswith("faq.jsonl:2")

    assert json.loads(run("stats", "kb").output)["documents"] == 4
    removed = run("rm", "kb", "faq-1")
    assert removed.exit_code == 0 and "deleted 1 documents" in removed.text

    (root / "bad.jsonl").write_text('{"id": "b"}\n')
    bad = run("ingest", "kb", str(root / "bad.jsonl"))
    assert bad.exit_code == 2 and "each line needs a string 'text'" in bad.text
    missing = run("search", "nope", "anything")
    assert missing.exit_code == 4 and "collection 'nope' not found" in missing.text
    empty = run("ingest", "kb", str(root / "empty.txt"))
    assert empty.exit_code == 2
    (root / "empty.txt").write_text("   ")
    empty = run("ingest", "kb", str(root / "empty.txt"))
    assert empty.exit_code == 2 and "has empty text" in empty.text
    assert run("rm", "kb", "--collection").exit_code == 0


async def test_cli_create_ingest_search_stats_rm(served, tmp_path):
    await asyncio.to_thread(_cli, served.running.target, tmp_path)
