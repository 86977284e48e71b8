"""Validates the custom resources in rendered manifests against the CRDs vendored in
deploy/crds (Gateway API, Gateway API Inference Extension), offline.

Each resource whose apiVersion/kind a vendored CRD defines is checked against that
version's openAPIV3Schema with jsonschema, strictly: a field the schema does not
declare is an error (the API server would prune it silently). CEL rules
(`x-kubernetes-validations`) are not evaluated. Resources of other kinds are left to
kubernetes-validate. Exit status 1 on any error; prints the other resources' kinds so
the caller can pass them on.

Usage: python scripts/validate_crs.py <crd-dir> <rendered.yaml>... [--rest <out.yaml>]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml


def load_crds(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in sorted(folder.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def strict(node: Any, path: tuple[str, ...] = ()) -> Any:
    """OpenAPI v3 (structural) as JSON Schema that refuses undeclared fields."""
    if isinstance(node, list):
        return [strict(v, path) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v, (*path, k)) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if node.get("nullable"):
        out["type"] = [node["type"], "null"] if "type" in node else out.get("type")
        out.pop("nullable")
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and path[-1:] != ("metadata",)
    ):
        out["additionalProperties"] = False
    return out


def main(argv: list[str]) -> int:
    rest_out = None
    if "--rest" in argv:
        i = argv.index("--rest")
        rest_out = Path(argv[i + 1])
        argv = argv[:i] + argv[i + 2 :]
    crd_dir, *files = argv
    schemas = load_crds(Path(crd_dir))
    errors = 0
    checked = 0
    rest: list[dict[str, Any]] = []
    for file in files:
        for doc in yaml.safe_load_all(Path(file).read_text()):
            if not doc:
                continue
            key = (doc.get("apiVersion", ""), doc.get("kind", ""))
            schema = schemas.get(key)
            if schema is None:
                rest.append(doc)
                continue
            checked += 1
            name = f"{file}: {key[1]}/{doc.get('metadata', {}).get('name', '?')}"
            validator = jsonschema.Draft7Validator(schema)
            problems = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
            for problem in problems:
                where = ".".join(str(p) for p in problem.absolute_path) or "(root)"
                print(f"  FAIL {name} at {where}: {problem.message}")
                errors += 1
            if not problems:
                print(f"  ok {name} ({key[0]})")
    if rest_out is not None:
        rest_out.write_text(yaml.safe_dump_all(rest, sort_keys=False))
    print(f"  {checked} custom resources checked against {len(schemas)} vendored CRD versions")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
