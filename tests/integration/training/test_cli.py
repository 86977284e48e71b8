"""The SDK and CLI against a real server: push data, start, follow, status, plot."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from loraplex.cli.main import app as cli
from services.common.testing import TEST_TENANT_KEYS, running_server
from services.training.app import TrainingApp
from tests.integration.training.conftest import MemoryPublisher, settings_for
from tests.unit.training.tiny_model import toy_rows, write_jsonl

pytestmark = pytest.mark.integration


async def test_cli_pushes_data_trains_follows_and_plots(tmp_path, models_dir):
    from PIL import Image

    app = TrainingApp(settings_for(tmp_path / "data", models_dir), publisher=MemoryPublisher())
    data = write_jsonl(tmp_path / "colors.jsonl", toy_rows(2))
    async with running_server(app.settings, app) as srv:
        conn = ["--address", srv.target, "--api-key", TEST_TENANT_KEYS["acme"]]
        runner = CliRunner()

        async def run(*args: str):
            result = await asyncio.to_thread(runner.invoke, cli, [*args, *conn])
            assert result.exit_code == 0, result.output
            return result.output

        pushed = await run("data", "push", str(data), "--name", "colors")
        dataset_id = pushed.split()[0]
        assert dataset_id.startswith("ds-") and "16 rows" in pushed
        started = await run(
            "train",
            "start",
            "tiny",
            "-d",
            dataset_id,
            "--max-steps",
            "12",
            "--learning-rate",
            "0.01",
            "--validation-ratio",
            "0.25",
            "--eval-interval",
            "4",
            "--checkpoint-interval",
            "6",
        )
        job_id = started.split()[0]
        followed = await run("train", "logs", job_id, "-f")
        assert "evaluation (test)" in followed
        validated = [f"evaluation (validation) at step {n}:" in followed for n in (4, 8, 12)]
        assert all(validated) and "evaluation (validation) at step 3:" not in followed, followed
        assert "checkpoint at step 6" in followed and "checkpoint at step 4" not in followed
        history = await run("train", "logs", job_id)
        assert "step 12/12" in history and history.strip().splitlines()[-1].endswith("succeeded")
        status = await run("train", "status", job_id)
        assert "succeeded" in status and "test_loss" in status
        assert job_id in await run("train", "list")
        png = tmp_path / "loss.png"
        await run("train", "plot", job_id, "--out", str(png))
        with Image.open(png) as image:
            assert image.format == "PNG" and image.size[0] > 100

        bad = await asyncio.to_thread(runner.invoke, cli, ["train", "status", "job-nope", *conn])
        assert bad.exit_code == 4
        refused = await asyncio.to_thread(
            runner.invoke,
            cli,
            ["train", "start", "tiny", "-d", dataset_id, "--eval-interval", "-1", *conn],
        )
        assert refused.exit_code != 0 and "eval_interval_steps must not be negative" in (
            refused.output
        ), refused.output
