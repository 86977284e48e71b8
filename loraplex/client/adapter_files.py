"""Writing a downloaded adapter version to a folder, checking every file's sha256.

Shared by the SDK's `pull` and the inference service's adapter cache, so both refuse
the same way a file the header did not announce or bytes that fail their hash.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from loraplex.registry.v1 import registry_service_pb2 as pb


class IntegrityError(ValueError):
    """The stream broke the protocol or a file failed its hash."""


class VerifiedFolder:
    def __init__(self, version: pb.AdapterVersion, folder: Path) -> None:
        self.version = version
        self.folder = folder
        self.expected = {f.path: f for f in version.files}
        self.total = sum(f.size_bytes for f in version.files)
        self.done = 0
        self._hashes: dict[str, Any] = {}

    def write(self, path: str, data: bytes) -> None:
        if path not in self.expected:
            raise IntegrityError(f"the download sent {path[:80]!r}, which it did not announce")
        target = self.folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("ab") as handle:
            handle.write(data)
        self._hashes.setdefault(path, hashlib.sha256()).update(data)
        self.done += len(data)

    def finish(self) -> None:
        """Checks every announced file (empty ones included) against its sha256."""
        for path, info in self.expected.items():
            digest = self._hashes.get(path, hashlib.sha256()).hexdigest()
            if digest != info.sha256:
                raise IntegrityError(
                    f"{self.version.name}@{self.version.version}: {path} failed its sha256 check"
                )
            (self.folder / path).touch()
