"""A hostile tenant's inputs against a real registry: precise refusals, nothing harmed.

Table-driven: a case is a label, a call, and the status it must get. For every case
the registry must answer neither INTERNAL nor UNKNOWN, stay SERVING on its health
service, and leave a known-good adapter exactly as it was (listed and downloadable
with the same bytes). Add a case by adding a row.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from safetensors.numpy import save_file

from loraplex.client.base import LoraplexClientError
from loraplex.client.registry import RegistryClient
from loraplex.registry.v1 import registry_service_pb2 as pb
from services.common.adapter_ref import AdapterName
from services.common.testing import server_thread
from services.registry.app import SERVICE_NAME, RegistryApp
from services.registry.peft_files import PeftInfo
from services.registry.records import FileRecord
from tests.integration.registry.adapters import make_lora_adapter
from tests.integration.registry.conftest import client_for, registry_settings
from tests.integration.registry.test_registry_bad_input import entry, raw_push

pytestmark = pytest.mark.integration
Code = grpc.StatusCode
KEY = "base_model.model.model.layers.0.self_attn.q_proj"


@dataclass
class World:
    """What a case may use: the tenant's client, the server, a scratch folder, good files."""

    acme: RegistryClient
    server: object
    tmp: Path
    config: bytes
    weights: bytes


@dataclass(frozen=True)
class Case:
    label: str
    call: Callable[[World], object]
    code: Code
    fragment: str = ""
    #: Runs before `call`; returns the adapter names it created on purpose.
    setup: Callable[[World], set[str]] | None = None


# -- building blocks ------------------------------------------------------------------------


def safetensors_bytes(tensors: dict[str, np.ndarray], tmp: Path) -> bytes:
    path = tmp / f"w{time.monotonic_ns()}.safetensors"
    save_file(tensors, str(path))
    return path.read_bytes()


def weights_with(value: float) -> Callable[[World], bytes]:
    def build(w: World) -> bytes:
        a = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
        a[7, 63] = value
        b = np.zeros((64, 8), np.float32)
        return safetensors_bytes({f"{KEY}.lora_A.weight": a, f"{KEY}.lora_B.weight": b}, w.tmp)

    return build


def raw_header(header: bytes | str, data: bytes = b"\0" * 4) -> Callable[[World], bytes]:
    """A safetensors file with a hand-written JSON header."""
    raw = header.encode() if isinstance(header, str) else header
    return lambda w: struct.pack("<Q", len(raw)) + raw + data


def push(
    name: str = "acme/hostile",
    weights: Callable[[World], bytes] | None = None,
    config: dict | bytes | None = None,
    **header_fields,
) -> Callable[[World], object]:
    def call(w: World):
        cfg = config if isinstance(config, bytes) else None
        if isinstance(config, dict):
            cfg = json.dumps({**json.loads(w.config), **config}, allow_nan=True).encode()
        files = {
            "adapter_config.json": cfg or w.config,
            "adapter_model.safetensors": weights(w) if weights else w.weights,
        }
        header = pb.PushHeader(
            name=name, files=[entry(p, d) for p, d in files.items()], **header_fields
        )
        return raw_push(w.acme, header, list(files.items()))

    return call


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def token(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode()


def list_adapters(**fields) -> Callable[[World], object]:
    return lambda w: w.acme._call(w.acme.stub.ListAdapters, pb.ListAdaptersRequest(**fields))


def list_versions(**fields) -> Callable[[World], object]:
    request = pb.ListAdapterVersionsRequest(name="acme/good", **fields)
    return lambda w: w.acme._call(w.acme.stub.ListAdapterVersions, request)


def download_messages(acme: RegistryClient, ref: str) -> list[pb.DownloadAdapterResponse]:
    return list(acme._stream(acme.stub.DownloadAdapter, pb.DownloadAdapterRequest(ref=ref), 30))


def download(ref: str) -> Callable[[World], object]:
    return lambda w: download_messages(w.acme, ref)


def check(ref: str, modules: list[str]) -> Callable[[World], object]:
    return lambda w: w.acme.check_compatibility(ref, available_modules=modules)


def pushed_with_pattern(pattern: str) -> Callable[[World], set[str]]:
    def setup(w: World) -> set[str]:
        push("acme/pattern", config={"target_modules": pattern})(w)
        return {"acme/pattern"}

    return setup


def stored_with_config(config: dict) -> Callable[[World], set[str]]:
    """A version written straight to the store, as a push from before today's checks left it."""

    def setup(w: World) -> set[str]:
        good = w.acme.get("acme/good")
        files = [FileRecord(f.path, f.size_bytes, f.sha256) for f in good.files]
        peft = PeftInfo.from_config({"peft_type": "LORA", **config})
        store = w.server.app.registry.store
        store.create_version(AdapterName("acme", "legacy"), files, peft, {}, {}, "")
        return {"acme/legacy"}

    return setup


SEVEN_MIB = "x" * (7 * 1024 * 1024)
INVALID, PRECONDITION = Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION

CASES = [
    # Weights that would poison an engine.
    Case("NaN weights", push(weights=weights_with(float("nan"))), INVALID, "NaN or infinite"),
    Case("inf weights", push(weights=weights_with(float("inf"))), INVALID, "NaN or infinite"),
    Case("-inf weights", push(weights=weights_with(float("-inf"))), INVALID, "NaN or infinite"),
    Case("1e30 weights", push(weights=weights_with(1e30)), INVALID, "in magnitude"),
    # Safetensors headers of the wrong shape.
    Case(
        "dtype as a list",
        push(weights=raw_header('{"w":{"dtype":["F32"],"shape":[1],"data_offsets":[0,4]}}')),
        INVALID,
        "dtype",
    ),
    Case(
        "offsets as a string",
        push(weights=raw_header('{"w":{"dtype":"F32","shape":[1],"data_offsets":"ab"}}')),
        INVALID,
        "offsets",
    ),
    Case(
        "offsets with null",
        push(weights=raw_header('{"w":{"dtype":"F32","shape":[1],"data_offsets":[null,4]}}')),
        INVALID,
        "offsets",
    ),
    Case(
        "shape that does not fit the data",
        push(weights=raw_header('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}')),
        INVALID,
        "shape",
    ),
    Case(
        "header nested 100k deep",
        push(weights=raw_header(deep_json(100_000))),
        INVALID,
        "unreadable safetensors header",
    ),
    # Adapter configs.
    Case("r 1e400", push(config=b'{"peft_type":"LORA","r":1e400}'), INVALID, "'r'"),
    Case("r a string", push(config={"r": "8"}), INVALID, "'r'"),
    Case(
        "lora_alpha 1e400",
        push(config=b'{"peft_type":"LORA","r":8,"lora_alpha":1e400}'),
        INVALID,
        "lora_alpha",
    ),
    Case("lora_alpha NaN", push(config={"lora_alpha": float("nan")}), INVALID, "lora_alpha"),
    Case(
        "config nested 300k deep",
        push(config=f'{{"peft_type":"LORA","x":{deep_json(300_000)}}}'.encode()),
        INVALID,
        "adapter_config.json",
    ),
    Case("target_modules '('", push(config={"target_modules": "("}), INVALID, "regular expression"),
    Case("target_modules huge", push(config={"target_modules": "a" * 5000}), INVALID, "longer"),
    # References, names and aliases.
    Case("GetAdapter x/y@²", lambda w: w.acme.get("x/y@²"), INVALID, "invalid"),
    Case("GetAdapter acme/good@²", lambda w: w.acme.get("acme/good@²"), INVALID),
    Case("DownloadAdapter acme/good@²", download("acme/good@²"), INVALID),
    Case("CheckCompatibility acme/good@²", check("acme/good@²", []), INVALID),
    Case("push name with newline", push(name="acme/x\n"), INVALID, "is invalid"),
    Case("get name with newline", lambda w: w.acme.get("acme/good\n"), INVALID),
    Case("alias with newline", lambda w: w.acme.set_alias("acme/good", "prod\n", 1), INVALID),
    Case("push alias with newline", push(aliases=["prod\n"]), INVALID),
    Case("ref alias with newline", lambda w: w.acme.get("acme/good@prod\n"), INVALID),
    # Page tokens the registry never issued.
    Case(
        "ListAdapters token '[' x 100k",
        list_adapters(page_token=token("[" * 100_000)),
        INVALID,
        "page_token",
    ),
    Case("ListAdapters token 5", list_adapters(page_token=token("5")), INVALID, "page_token"),
    Case("ListAdapters token null", list_adapters(page_token=token("null")), INVALID),
    Case("ListAdapters token list", list_adapters(page_token=token('[{"a":1},"x"]')), INVALID),
    Case(
        "ListVersions token '[' x 100k",
        list_versions(page_token=token("[" * 100_000)),
        INVALID,
        "page_token",
    ),
    Case("ListVersions token string", list_versions(page_token=token('"x"')), INVALID),
    Case("ListVersions token true", list_versions(page_token=token("true")), INVALID),
    Case("ListVersions token [1,2,3]", list_versions(page_token=token("[1,2,3]")), INVALID),
    # Lineage and metadata of any size.
    Case("7 MiB lineage", push(lineage={"notes": SEVEN_MIB}), INVALID, "lineage"),
    Case(
        "many lineage entries",
        push(lineage={f"k{i}": "v" * 600 for i in range(200)}),
        INVALID,
        "64 KiB",
    ),
    Case("huge lineage key", push(lineage={"k" * 5000: "v"}), INVALID, "lineage"),
    Case("NaN metric", push(metrics={"loss": float("nan")}), INVALID, "metric"),
    # Patterns: invalid ones stored by an older registry; costly ones matched safely.
    Case(
        "stored pattern '('",
        check("acme/legacy", ["q_proj"]),
        PRECONDITION,
        "regular expression",
        setup=stored_with_config({"target_modules": "("}),
    ),
    Case(
        "stored r 1e400",
        lambda w: w.acme.get("acme/legacy"),
        Code.OK,
        setup=stored_with_config({"r": float("inf"), "lora_alpha": float("inf")}),
    ),
    Case(
        "ReDoS (a+)+$",
        check("acme/pattern", ["a" * 26 + "!"]),
        PRECONDITION,
        setup=pushed_with_pattern("(a+)+$"),
    ),
    Case(
        "ReDoS (a|aa)+$",
        check("acme/pattern", ["a" * 60 + "!"]),
        PRECONDITION,
        setup=pushed_with_pattern("(a|aa)+$"),
    ),
]


# -- the harness ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("hostile")
    settings = registry_settings(tmp / "data")
    with (
        server_thread(settings, RegistryApp(settings)) as server,
        client_for(server, "acme") as acme,
    ):
        folder = make_lora_adapter(tmp / "good")
        acme.push("acme/good", folder, lineage={"run": "1"}, aliases=["prod"])
        yield World(
            acme,
            server,
            tmp,
            (folder / "adapter_config.json").read_bytes(),
            (folder / "adapter_model.safetensors").read_bytes(),
        )


def health(server, timeout: float = 10.0) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=timeout
        )
    return reply.status


def snapshot(w: World) -> tuple[set[str], str, dict[str, str]]:
    """Every listed name, the good adapter's listing, and the digests of its downloaded bytes."""
    summaries = list(w.acme.list())
    (good,) = [s for s in summaries if s.name == "acme/good"]
    digests: dict = {}
    for message in download_messages(w.acme, "acme/good@prod")[1:]:
        digests.setdefault(message.chunk.path, hashlib.sha256()).update(message.chunk.data)
    return (
        {s.name for s in summaries},
        good.SerializeToString(deterministic=True).hex(),
        {p: d.hexdigest() for p, d in digests.items()},
    )


def blobs(w: World) -> set[str]:
    """Files on disk: content blobs, and any temp file a push left behind."""
    root = w.server.settings.data_dir / "registry" / "blobs"
    return {p.name for p in (root / "sha256").glob("*/*")} | {p.name for p in root.glob("tmp/*")}


def cleanup(w: World, names: set[str]) -> None:
    for name in names:
        w.acme.delete(name, force=True)


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_hostile_input(world: World, case: Case):
    names_before, good_before, bytes_before = snapshot(world)
    files_before = blobs(world)
    created = case.setup(world) if case.setup else set()
    try:
        code, message = Code.OK, ""
        try:
            case.call(world)
        except LoraplexClientError as err:
            code, message = err.code, err.message
        assert code not in (Code.INTERNAL, Code.UNKNOWN), f"{case.label}: {code} {message}"
        assert code == case.code, f"{case.label}: {code} {message!r}"
        assert case.fragment in message, f"{case.label}: {message!r}"
        assert health(world.server) == health_pb2.HealthCheckResponse.SERVING
        names_after, good_after, bytes_after = snapshot(world)
        assert names_after - created == names_before, "nothing else stored"
        assert (good_after, bytes_after) == (good_before, bytes_before), "good adapter unchanged"
        kept = {f.sha256 for name in created for f in world.acme.get(name).files}
        assert blobs(world) - files_before <= kept, "a refused request left files behind"
    finally:
        cleanup(world, created)


def test_health_answers_while_a_costly_pattern_is_matched(world: World):
    """The ReDoS pattern runs off the event loop: health answers all the while.

    With `re` on the loop, the first check never returns and health times out; each
    check here gives up within its budget, so the loop stays free for other requests.
    """
    created = pushed_with_pattern("(a|aa)+$")(world)
    outcome: list[object] = []

    def costly() -> None:
        for _ in range(6):
            try:
                check("acme/pattern", ["a" * 60 + "!"] * 50)(world)
                outcome.append(Code.OK)
            except LoraplexClientError as err:
                outcome.append(err.code)

    worker = threading.Thread(target=costly)
    try:
        worker.start()
        answered = 0
        while worker.is_alive() or not answered:
            assert health(world.server, timeout=10.0) == health_pb2.HealthCheckResponse.SERVING
            answered += 1
            time.sleep(0.05)
        assert outcome == [Code.FAILED_PRECONDITION] * 6
    finally:
        worker.join()
        cleanup(world, created)
