"""Generates the Python gRPC stubs (with .pyi) from protos/ into the loraplex package.

Stubs are never committed: they are rebuilt by the set-up so they always match
the pinned grpcio-tools and protobuf runtime.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def main() -> int:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        *protos,
    ]
    if protoc.main(args) != 0:
        print("protoc failed", file=sys.stderr)
        return 1
    for proto in protos:
        package_dir = ROOT / Path(proto).parent
        for directory in (package_dir, package_dir.parent):
            (directory / "__init__.py").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
