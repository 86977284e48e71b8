"""The SDK and CLI stand without the services; admin commands say which extra they need.

The import rules themselves are import-linter contracts (pyproject, `make lint`);
these tests run the installed CLI in a process where the services' extras are absent.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Marking a module None in sys.modules makes it absent: import fails, find_spec says None.
ABSENT = (
    "pydantic_settings",
    "sqlalchemy",
    "grpc_health",
    "prometheus_client",
    "torch",
    "transformers",
    "faiss",
    "sentence_transformers",
    "vllm",
)


def _run(body: str) -> subprocess.CompletedProcess[str]:
    script = f"import sys\nfor name in {ABSENT!r}:\n    sys.modules[name] = None\n" + body
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_sdk_and_cli_import_without_the_services():
    result = _run(
        textwrap.dedent(
            """
            import loraplex.cli.main
            import loraplex.client
            loaded = sorted(m for m in sys.modules if m == "services" or m.startswith("services."))
            print("loaded:", loaded)
            """
        )
    )
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stdout


@pytest.mark.parametrize(
    ("args", "extras"),
    [
        (["suite", "up"], "services,ml,serve-cpu"),
        (["suite", "up", "--service", "registry"], "services"),
        (["keys", "create", "--tenant", "acme"], "services"),
        (["models", "import"], "services,ml"),
    ],
)
def test_admin_commands_name_the_missing_extra(args, extras, tmp_path):
    result = _run(
        "from loraplex.cli.main import app\n"
        f"app({[*args, *(['--data-dir', str(tmp_path)] if args[0] != 'keys' else [])]!r})\n"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert f"pip install 'loraplex[{extras}]'" in message
    assert "Traceback" not in result.stderr
