"""Refreshes the CRD schemas in deploy/crds from a checkout of their upstream repository.

Keeps each CRD's `v1` version only and drops `description` fields (the schema is
otherwise verbatim), so `scripts/validate_crs.py` can check our custom resources
offline. Usage: python scripts/vendor_crds.py <checkout> <path-in-checkout>... <out-dir>
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def strip(node):
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main() -> None:
    checkout, *paths, out = sys.argv[1:]
    for path in paths:
        crd = yaml.safe_load((Path(checkout) / path).read_text())
        crd["spec"]["versions"] = [strip(v) for v in crd["spec"]["versions"] if v["name"] == "v1"]
        crd["metadata"] = {"name": crd["metadata"]["name"]}
        target = Path(out) / Path(path).name
        target.write_text(yaml.safe_dump(crd, sort_keys=False, width=120))
        print(f"{target}: {len(target.read_text().splitlines())} lines")


if __name__ == "__main__":
    main()
