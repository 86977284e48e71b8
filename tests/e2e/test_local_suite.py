"""The whole flow through the CLI against the four services as separate OS processes.

Configured from the dev overlay's suite.env (one source of truth with Kubernetes);
retrieval and registry are killed with SIGKILL midway, restarted, and the flow
completes with nothing acknowledged lost. Uses the tiny test model.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from services.suite import DEV_ENV_FILE, LocalSuite
from tests.tiny_llm import build_tiny_llama

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CLI = [sys.executable, "-m", "loraplex.cli.main"]
HANDBOOK = {
    "travel.md": "# Travel\n\nTrips abroad need approval from the Regional Director via form TR-7.",
    "refunds.md": "# Refunds\n\nThe refund window for the Servo-X line is 45 days from delivery.",
    "badges.md": "# Badges\n\nSecurity badges must be worn visibly; lost badges cost 20 credits.",
}


class User:
    """Runs `loraplex …` the way a person at a shell would."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env}

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [*CLI, *args], env=self.env, capture_output=True, text=True, timeout=600
        )
        if ok:
            assert result.returncode == 0, f"loraplex {' '.join(args)}:\n{result.stderr}"
        return result


def test_flow_survives_killed_registry_and_retrieval(tmp_path):
    assert DEV_ENV_FILE.exists(), "the dev overlay's suite.env is the e2e test's configuration"
    data = tmp_path / "data"
    suite = LocalSuite(
        data,
        overrides={
            "LORAPLEX_INFERENCE_MODEL": str(tmp_path / "data" / "models" / "tiny"),
            "LORAPLEX_INFERENCE_MODEL_NAME": "tiny",
            "LORAPLEX_INFERENCE_MAX_MODEL_LEN": "512",
            "LORAPLEX_INFERENCE_KV_CACHE_BYTES": str(128 * 1024 * 1024),
            "LORAPLEX_INFERENCE_MAX_LORAS": "2",
            "LORAPLEX_INFERENCE_MAX_LORA_RANK": "16",
            "LORAPLEX_INFERENCE_WATCH_TENANTS": '["acme"]',
        },
    )
    user = User(suite.env)
    key = user.run("keys", "create", "--tenant", "acme").stdout.strip().splitlines()[-1]
    user.env["LORAPLEX_API_KEY"] = key
    user.run("models", "import", str(build_tiny_llama(tmp_path / "tiny-src")), "--name", "tiny")

    docs = tmp_path / "handbook"
    docs.mkdir()
    for name, text in HANDBOOK.items():
        (docs / name).write_text(text)
    rows = [
        {"prompt": f"question: {q}", "completion": a}
        for q, a in [("who approves travel?", "the regional director")] * 12
        + [("refund window?", "45 days")] * 12
    ]
    dataset = tmp_path / "train.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))

    with suite:
        suite.start_all()
        user.run("docs", "create", "handbook")
        user.run("docs", "ingest", "handbook", str(docs))
        # Retrieval dies the hard way right after acknowledging the ingest.
        suite.kill("retrieval")
        suite.start("retrieval")
        found = user.run("docs", "search", "handbook", "who approves trips abroad", "--json")
        assert "Regional Director" in found.stdout
        stats = user.run("docs", "stats", "handbook").stdout
        assert re.search(r"\b3\b", stats), stats

        dataset_id = user.run("data", "push", str(dataset)).stdout.split()[0]
        job_id = user.run(
            "train", "start", "tiny", "--dataset", dataset_id, "--max-steps", "6",
            "--batch-size", "4", "--publish", "acme/support", "--promote-alias", "prod",
        ).stdout.split()[0]  # fmt: skip
        user.run("train", "logs", "-f", job_id)
        status = user.run("train", "status", job_id).stdout
        assert "published acme/support@1" in status, status

        # The registry dies the hard way after acknowledging the push and the alias.
        suite.kill("registry")
        suite.start("registry")
        shown = json.loads(user.run("registry", "show", "acme/support@prod").stdout)
        assert shown["ref"] == "acme/support@1" and "dataset_sha256" in shown["lineage"]

        answer = user.run(
            "ask", "Who approves trips abroad?", "--adapter", "acme/support@prod",
            "--collection", "handbook", "--top-k", "2", "--max-tokens", "12",
        ).stdout  # fmt: skip
        assert "acme/support@1" in answer and "sources" in answer
        assert "Travel" in answer
        # Another tenant sees none of it.
        other = user.run("keys", "create", "--tenant", "globex").stdout.strip().splitlines()[-1]
        user.env["LORAPLEX_API_KEY"] = other
        assert user.run("registry", "show", "acme/support", ok=False).returncode == 4
        assert user.run("docs", "search", "handbook", "travel", ok=False).returncode == 4
    assert all(p.poll() is not None for p in suite.processes.values())


def test_suite_env_rewrites_cluster_addresses(tmp_path):
    env_file = tmp_path / "suite.env"
    env_file.write_text(
        "# comment\nLORAPLEX_INFERENCE_REGISTRY_ADDR=registry:50051\n"
        "LORAPLEX_TRAINING_REGISTRY_ADDR=registry.loraplex.svc.cluster.local:50051\n"
        "LORAPLEX_LOG_JSON=true\nLORAPLEX_DATA_DIR=/data\n"
        "LORAPLEX_INFERENCE_MODEL=/data/models/smollm2\n"
    )
    suite = LocalSuite(tmp_path / "d", env_file)
    assert suite.env["LORAPLEX_INFERENCE_REGISTRY_ADDR"] == suite.address("registry")
    assert suite.env["LORAPLEX_TRAINING_REGISTRY_ADDR"] == suite.address("registry")
    assert suite.env["LORAPLEX_LOG_JSON"] == "true"
    assert suite.env["LORAPLEX_DATA_DIR"] == str((tmp_path / "d").resolve())
    assert Path(suite.env["LORAPLEX_DATA_DIR"]).is_absolute()
    model = Path(suite.env["LORAPLEX_INFERENCE_MODEL"])
    assert model == (tmp_path / "d").resolve() / "models" / "smollm2"
