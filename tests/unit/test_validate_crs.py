"""scripts/validate_crs.py: our custom resources against the vendored CRD schemas."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "deploy" / "crds"
spec = importlib.util.spec_from_file_location("validate_crs", ROOT / "scripts" / "validate_crs.py")
validate_crs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(validate_crs)

POOL = {
    "apiVersion": "inference.networking.k8s.io/v1",
    "kind": "InferencePool",
    "metadata": {"name": "inference"},
    "spec": {
        "selector": {"matchLabels": {"app.kubernetes.io/name": "inference"}},
        "targetPorts": [{"number": 8054}],
        "endpointPickerRef": {"name": "picker", "port": {"number": 9002}},
    },
}


def run(tmp_path: Path, *docs: dict) -> tuple[int, str]:
    file = tmp_path / "docs.yaml"
    file.write_text(yaml.safe_dump_all(docs))
    code = validate_crs.main([str(CRDS), str(file), "--rest", str(tmp_path / "rest.yaml")])
    return code, (tmp_path / "rest.yaml").read_text()


def test_a_valid_pool_passes_and_core_kinds_are_passed_on(tmp_path, capsys):
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}
    code, rest = run(tmp_path, POOL, service)
    assert code == 0 and "ok" in capsys.readouterr().out
    assert yaml.safe_load(rest)["kind"] == "Service"


def test_wrong_types_missing_and_undeclared_fields_fail(tmp_path, capsys):
    bad = yaml.safe_load(yaml.safe_dump(POOL))
    bad["spec"]["targetPorts"] = [{"number": 70000}]
    bad["spec"]["targetPortNumber"] = 8000  # v1alpha2's field, gone in v1
    del bad["spec"]["selector"]
    code, _ = run(tmp_path, bad)
    out = capsys.readouterr().out
    assert code == 1
    assert "'selector' is a required property" in out and "targetPortNumber" in out
    assert "70000" in out


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")
def test_the_openai_overlay_renders_and_validates(tmp_path):
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "deploy/kustomize/overlays/openai")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = {d["kind"] for d in docs}
    assert {"InferencePool", "HTTPRoute", "Gateway"} <= kinds
    code, _ = run(tmp_path, *docs)
    assert code == 0
