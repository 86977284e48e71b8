"""Bad pushes get a precise status and leave nothing stored."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile

import grpc
import pytest
from safetensors.numpy import load_file, save_file

from loraplex.client.base import LoraplexClientError
from loraplex.client.registry import RegistryClient
from loraplex.registry.v1 import registry_service_pb2 as pb
from services.common.testing import server_thread
from services.registry.app import RegistryApp
from tests.integration.registry.adapters import make_lora_adapter
from tests.integration.registry.conftest import client_for, registry_settings

pytestmark = pytest.mark.integration
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def raw_push(client: RegistryClient, header: pb.PushHeader, chunks: list[tuple[str, bytes]]):
    def requests():
        yield pb.PushAdapterRequest(header=header)
        for path, data in chunks:
            yield pb.PushAdapterRequest(chunk=pb.FileChunk(path=path, data=data))

    return client._call(client.stub.PushAdapter, requests())


def entry(path: str, data: bytes, sha: str | None = None, size: int | None = None):
    return pb.FileManifest(
        path=path,
        size_bytes=len(data) if size is None else size,
        sha256=sha or hashlib.sha256(data).hexdigest(),
    )


def adapter_bytes(tmp_path) -> dict[str, bytes]:
    folder = make_lora_adapter(tmp_path / "src")
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def push_files(client, files: dict[str, bytes], name="acme/bad", **manifest_overrides):
    header = pb.PushHeader(name=name, files=[entry(p, d) for p, d in files.items()])
    for index, override in manifest_overrides.items():
        header.files[int(index.removeprefix("f"))].CopyFrom(override)
    return raw_push(client, header, list(files.items()))


def _status(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(LoraplexClientError) as err:
        call()
    return err.value.code, err.value.message


def assert_nothing_stored(acme, server):
    assert list(acme.list()) == []
    root = server.settings.data_dir / "registry" / "blobs"
    assert not list((root / "sha256").glob("*/*")), "no blob left behind"
    assert not list((root / "tmp").iterdir()), "no temp file left behind"


def test_bad_pushes_are_refused_precisely(acme, registry_server, tmp_path):
    files = adapter_bytes(tmp_path)
    config, weights = files["adapter_config.json"], files["adapter_model.safetensors"]
    cases = {
        "no header": (lambda: raw_push(acme, pb.PushHeader(name="acme/x"), []), "lists no files"),
        "empty name": (lambda: push_files(acme, files, name=""), "is invalid"),
        "traversal name": (lambda: push_files(acme, files, name="acme/../x"), "is invalid"),
        "traversal path": (
            lambda: push_files(acme, {"../adapter_config.json": config, **files}),
            "is invalid",
        ),
        "absolute path": (
            lambda: push_files(acme, {"/etc/passwd.json": config, **files}),
            "is invalid",
        ),
        "pickle by name": (
            lambda: push_files(acme, {"adapter_config.json": config, "adapter_model.bin": weights}),
            "pickle checkpoint",
        ),
        "pickle by content": (
            lambda: push_files(
                acme,
                {
                    "adapter_config.json": config,
                    "adapter_model.safetensors": pickle.dumps({"w": [1, 2, 3]}),
                },
            ),
            "pickle",
        ),
        "zip torch archive": (
            lambda: push_files(
                acme, {"adapter_config.json": config, "adapter_model.safetensors": b"PK\x03\x04xx"}
            ),
            "pickle/torch archive",
        ),
        "truncated safetensors": (
            lambda: push_files(
                acme, {"adapter_config.json": config, "adapter_model.safetensors": weights[:-10]}
            ),
            "offsets",
        ),
        "no config": (
            lambda: push_files(acme, {"adapter_model.safetensors": weights}),
            "adapter_config.json",
        ),
        "config not peft": (
            lambda: push_files(acme, {**files, "adapter_config.json": b'{"hello": 1}'}),
            "peft_type",
        ),
        "wrong hash": (
            lambda: push_files(
                acme, files, f1=entry("adapter_model.safetensors", b"x" * len(weights))
            ),
            "sha256 mismatch",
        ),
        "wrong size": (
            lambda: push_files(
                acme, files, f1=entry("adapter_model.safetensors", weights, size=len(weights) + 5)
            ),
            "were announced",
        ),
        "bad sha format": (
            lambda: push_files(acme, files, f0=entry("adapter_config.json", config, sha="XYZ")),
            "64 lower-case hex",
        ),
        "unlisted chunk": (
            lambda: raw_push(
                acme,
                pb.PushHeader(name="acme/x", files=[entry(p, d) for p, d in files.items()]),
                [*files.items(), ("extra.json", b"{}")],
            ),
            "did not list",
        ),
        "missing file": (
            lambda: raw_push(
                acme,
                pb.PushHeader(name="acme/x", files=[entry(p, d) for p, d in files.items()]),
                [("adapter_config.json", config)],
            ),
            "never sent",
        ),
        "bad alias": (
            lambda: acme.push("acme/x", tmp_path / "src", aliases=["latest"]),
            "reserved",
        ),
    }
    for label, (call, fragment) in cases.items():
        code, message = _status(call)
        assert code == INVALID, f"{label}: {code} {message}"
        assert fragment in message, f"{label}: {message!r}"
    assert_nothing_stored(acme, registry_server)


def test_tar_with_links_or_traversal_refused(acme, registry_server, tmp_path):
    files = adapter_bytes(tmp_path)
    for label, member_name, kind in (
        ("traversal", "../adapter_model.safetensors", tarfile.REGTYPE),
        ("symlink", "adapter_model.safetensors", tarfile.SYMTYPE),
    ):
        archive = tmp_path / f"{label}.tar"
        with tarfile.open(archive, "w") as tar:
            info = tarfile.TarInfo("adapter_config.json")
            info.size = len(files["adapter_config.json"])
            tar.addfile(info, io.BytesIO(files["adapter_config.json"]))
            info = tarfile.TarInfo(member_name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(files["adapter_model.safetensors"])
                tar.addfile(info, io.BytesIO(files["adapter_model.safetensors"]))
        code, message = _status(lambda archive=archive: acme.push("acme/t", archive))
        assert code == INVALID, message
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar at all" * 100)
    assert _status(lambda: acme.push("acme/t", garbage))[0] == INVALID
    assert_nothing_stored(acme, registry_server)


def test_size_limits_are_resource_exhausted(tmp_path):
    settings = registry_settings(tmp_path / "data", max_adapter_bytes=1000)
    with (
        server_thread(settings, RegistryApp(settings)) as server,
        client_for(server, "acme") as acme,
    ):
        code, message = _status(lambda: acme.push("acme/big", make_lora_adapter(tmp_path / "a")))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit is 1000" in message
        assert_nothing_stored(acme, server)


def test_reads_with_bad_references(acme, adapter_dir):
    acme.push("acme/ok", adapter_dir)
    assert _status(lambda: acme.get("acme/ok@nope"))[0] == grpc.StatusCode.NOT_FOUND
    assert _status(lambda: acme.get("acme/ok@9"))[0] == grpc.StatusCode.NOT_FOUND
    assert _status(lambda: acme.get("acme/ok@0"))[0] == INVALID
    assert _status(lambda: acme.get("no-slash"))[0] == INVALID
    assert _status(lambda: acme.get("acme/../etc"))[0] == INVALID
    assert _status(lambda: acme.set_alias("acme/ok", "1bad", 1))[0] == INVALID
    assert _status(lambda: acme.set_alias("acme/ok", "prod", 1, stage_seconds=-1))[0] == INVALID
    bad_token = pb.ListAdaptersRequest(page_token="!!notatoken")
    assert _status(lambda: acme._call(acme.stub.ListAdapters, bad_token))[0] == INVALID
    assert acme.get("acme/ok").version == 1, "stored data untouched"


def _poisoned(tmp_path, value: float):
    folder = make_lora_adapter(tmp_path / f"poisoned-{value}")
    path = folder / "adapter_model.safetensors"
    tensors = load_file(str(path))
    key = sorted(tensors)[-1]
    tensors[key][-1, -1] = value  # the very last element of the last tensor
    save_file(tensors, str(path))
    return folder


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(float("nan"), "NaN or infinite"), (float("inf"), "NaN or infinite"),
     (float("-inf"), "NaN or infinite"), (1e30, "1e+30 in magnitude")],
)  # fmt: skip
def test_non_finite_or_huge_weights_are_refused_and_nothing_stored(
    acme, registry_server, tmp_path, value, fragment
):
    code, message = _status(lambda: acme.push("acme/poisoned", _poisoned(tmp_path, value)))
    assert code == INVALID, message
    assert fragment in message and "adapter_model.safetensors" in message, message
    assert_nothing_stored(acme, registry_server)


def test_weight_magnitude_limit_is_a_setting(tmp_path):
    settings = registry_settings(tmp_path / "data", max_weight_abs=1e31)
    with (
        server_thread(settings, RegistryApp(settings)) as server,
        client_for(server, "acme") as acme,
    ):
        assert acme.push("acme/big-weights", _poisoned(tmp_path, 1e30)).version == 1
        assert _status(lambda: acme.push("acme/nan", _poisoned(tmp_path, float("nan"))))[0] == (
            INVALID
        )
