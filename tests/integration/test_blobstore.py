"""One behaviour suite for both `BlobStore` backends: local files and S3.

The S3 backend runs against moto's standalone server on loopback, an EMULATOR of
S3 (no MinIO is installable here); see tests/object_store.py.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common.blob_local import LocalBlobStore
from services.common.blob_s3 import S3BlobStore
from services.common.blobstore import (
    BlobMissing,
    BlobSettings,
    BlobStore,
    BlobStoreFields,
    open_blob_store,
)
from services.common.errors import InvalidArgument, Unavailable
from services.common.probes import free_port
from tests.object_store import s3_endpoint, s3_settings  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

BIG = 6 * 1024 * 1024 + 123  # over the 5 MiB part size: a multipart upload on S3


@dataclass
class Backend:
    store: BlobStore
    #: Replaces a stored blob's bytes behind the store's back.
    corrupt: Callable[[str, bytes], None]
    #: Leaves an upload behind as a killed process would; returns a way to see it.
    dead_upload: Callable[[], Callable[[], bool]]


def _local(tmp_path: Path) -> Backend:
    store = open_blob_store(BlobSettings(url=(tmp_path / "blobs").as_uri()))
    assert isinstance(store, LocalBlobStore)

    def dead_upload() -> Callable[[], bool]:
        part = store.tmp_dir / "dead.part"
        part.write_bytes(b"half")
        return part.exists

    return Backend(store, lambda d, data: store.path(d).write_bytes(data), dead_upload)


def _s3(settings: BlobSettings) -> Backend:
    store = open_blob_store(settings)
    assert isinstance(store, S3BlobStore)

    def corrupt(digest: str, data: bytes) -> None:
        store.client.put_object(Bucket=store.bucket, Key=store._blob_key(digest), Body=data)

    def dead_upload() -> Callable[[], bool]:
        key = store._blob_key("0" * 64)
        store.client.create_multipart_upload(Bucket=store.bucket, Key=key)
        part = store.spool_dir / "dead.part"
        part.write_bytes(b"half")

        def alive() -> bool:
            uploads = store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
            return bool(uploads) or part.exists()

        return alive

    return Backend(store, corrupt, dead_upload)


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path) -> Iterator[Backend]:
    if request.param == "local":
        yield _local(tmp_path)
    else:
        yield _s3(request.getfixturevalue("s3_settings"))


def push(store: BlobStore, data: bytes, sha: str | None = None) -> str:
    writer = store.writer(len(data), sha or hashlib.sha256(data).hexdigest())
    for start in range(0, len(data), 1 << 20):
        writer.write(data[start : start + (1 << 20)])
    return writer.commit()


def pull(store: BlobStore, digest: str) -> bytes:
    return b"".join(store.read_chunks(digest, 64 * 1024))


# -- content-addressed blobs ---------------------------------------------------------------


def test_push_is_invisible_until_commit_then_pulls_identical(backend):
    store, data = backend.store, os.urandom(1000)
    digest = hashlib.sha256(data).hexdigest()
    writer = store.writer(len(data), digest)
    writer.write(data)
    assert writer.verify() == digest
    assert writer.local_path.read_bytes() == data, "the spool is readable before commit"
    assert not store.exists(digest) and list(store.digests()) == []
    assert writer.commit() == digest
    assert store.exists(digest) and list(store.digests()) == [digest]
    assert pull(store, digest) == data
    assert store.verify(digest)
    assert [len(c) for c in store.read_chunks(digest, 300)] == [300, 300, 300, 100]


def test_large_blob_round_trips_in_parts(backend, tmp_path):
    data = os.urandom(BIG)
    digest = push(backend.store, data)
    assert pull(backend.store, digest) == data
    fetched = backend.store.fetch(digest, tmp_path / "out" / "big.bin")
    assert fetched.read_bytes() == data
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    assert backend.store.push_file(source) == digest


@pytest.mark.parametrize(
    "data, size, sha, message",
    [
        (b"abcd", 3, None, "more bytes than the announced size 3"),
        (b"ab", 3, None, "received 2 bytes but 3 were announced"),
        (b"abc", 3, "0" * 64, "sha256 mismatch"),
    ],
)
def test_bad_upload_is_refused_and_leaves_nothing(backend, data, size, sha, message):
    store = backend.store
    writer = store.writer(size, sha)
    with pytest.raises(InvalidArgument, match=message):
        writer.write(data)
        writer.commit()
    writer.abort()
    assert list(store.digests()) == []
    assert store.sweep(set(), 0, 0) == 0, "abort removed the spooled bytes"


def test_same_bytes_twice_store_one_blob(backend):
    data = b"twice"
    writers = [backend.store.writer(len(data)) for _ in range(2)]
    for writer in writers:
        writer.write(data)
    digests = []
    threads = [threading.Thread(target=lambda w=w: digests.append(w.commit())) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(digests)) == 1 and list(backend.store.digests()) == digests[:1]
    assert pull(backend.store, digests[0]) == data


def test_verify_and_fetch_detect_corruption(backend, tmp_path):
    store = backend.store
    digest = push(store, b"original bytes")
    backend.corrupt(digest, b"tampered bytes")
    assert not store.verify(digest)
    with pytest.raises(BlobMissing, match="corrupt"):
        store.fetch(digest, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists(), "a refused fetch leaves no file"


def test_missing_blob(backend):
    missing = "f" * 64
    assert not backend.store.exists(missing) and not backend.store.verify(missing)
    with pytest.raises(BlobMissing):
        pull(backend.store, missing)
    with pytest.raises(ValueError, match="not a sha256"):
        backend.store.exists("../../etc/passwd")


def test_delete_blobs(backend):
    keep, drop = push(backend.store, b"keep"), push(backend.store, b"drop")
    assert backend.store.delete_blobs([drop, "e" * 64]) == 2
    assert list(backend.store.digests()) == [keep]


def test_sweep_removes_orphans_and_dead_uploads_never_live_ones(backend):
    store = backend.store
    used, orphan = push(store, b"used"), push(store, b"orphan")
    upload_seen = backend.dead_upload()
    live = store.writer(4)
    live.write(b"li")
    assert store.sweep({used}, grace_seconds=3600, part_grace_seconds=3600) == 0
    assert set(store.digests()) == {used, orphan} and upload_seen()

    assert store.sweep({used}, grace_seconds=0, part_grace_seconds=0) >= 2
    assert list(store.digests()) == [used]
    assert not upload_seen(), "the dead upload is gone"
    live.write(b"ve")
    assert pull(store, live.commit()) == b"live", "the live upload survived the sweep"


def test_recommit_refreshes_age_so_a_sweep_spares_it(backend):
    store = backend.store
    digest = push(store, b"again")
    assert store.sweep(set(), grace_seconds=0, part_grace_seconds=3600) == 1
    assert push(store, b"again") == digest and store.exists(digest)
    assert store.sweep(set(), grace_seconds=3600, part_grace_seconds=3600) == 0
    assert store.exists(digest)


# -- keyed objects -------------------------------------------------------------------------


def test_keyed_objects_put_get_list_delete(backend, tmp_path):
    store = backend.store
    source = tmp_path / "index.faiss"
    source.write_bytes(os.urandom(BIG))
    info = store.put("acme/docs/gen-2/index.faiss", source)
    assert info.key == "acme/docs/gen-2/index.faiss" and info.size_bytes == BIG
    store.put("acme/docs/gen-2/meta.json", b'{"n": 1}')
    store.put("acme/docs/gen-10/meta.json", b"{}")
    store.put("acme/other/meta.json", b"{}")
    store.put("globex/docs/meta.json", b"{}")

    assert store.get("acme/docs/gen-2/index.faiss", tmp_path / "got").read_bytes() == (
        source.read_bytes()
    )
    assert store.read_bytes("acme/docs/gen-2/meta.json") == b'{"n": 1}'
    store.put("acme/docs/gen-2/meta.json", b'{"n": 2}')
    assert store.read_bytes("acme/docs/gen-2/meta.json") == b'{"n": 2}', "put replaces"
    assert [i.key for i in store.list("acme/docs/")] == [
        "acme/docs/gen-10/meta.json",
        "acme/docs/gen-2/index.faiss",
        "acme/docs/gen-2/meta.json",
    ]
    assert [i.key for i in store.list("acme/docs/gen-1")] == ["acme/docs/gen-10/meta.json"]
    assert len(store.list()) == 5
    stat = store.stat("acme/other/meta.json")
    assert stat is not None and stat.size_bytes == 2 and store.stat("acme/none") is None

    assert store.delete("acme/other/meta.json") and not store.delete("acme/other/meta.json")
    assert store.delete_prefix("acme/docs/gen-2/") == 2
    assert [i.key for i in store.list("acme/")] == ["acme/docs/gen-10/meta.json"]
    with pytest.raises(BlobMissing):
        store.read_bytes("acme/docs/gen-2/meta.json")
    with pytest.raises(ValueError, match="non-empty"):
        store.delete_prefix("")
    assert list(store.digests()) == [], "objects and blobs do not mix"
    assert store.sweep(set(), 0, 0) == 0 and len(store.list()) == 2, "a sweep spares objects"


@pytest.mark.parametrize("key", ["", "../x", "/abs", "a//b", "a/../b", ".hidden", "a b", "x" * 600])
def test_bad_keys_are_refused(backend, key):
    with pytest.raises(ValueError, match="object key"):
        backend.store.put(key, b"x")
    assert backend.store.list() == []


# -- settings ------------------------------------------------------------------------------


def test_settings_pick_the_backend(tmp_path, monkeypatch):
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class DemoSettings(BaseSettings, BlobStoreFields):
        model_config = SettingsConfigDict(env_prefix="LORAPLEX_DEMO_")

    default = DemoSettings().blob_settings(tmp_path / "blobs")
    assert isinstance(open_blob_store(default), LocalBlobStore)
    monkeypatch.setenv("LORAPLEX_DEMO_BLOB_URL", "s3://bucket/some/prefix")
    monkeypatch.setenv("LORAPLEX_DEMO_BLOB_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LORAPLEX_DEMO_BLOB_SPOOL_DIR", str(tmp_path / "spool"))
    s3 = open_blob_store(DemoSettings().blob_settings(tmp_path / "blobs"))
    assert isinstance(s3, S3BlobStore) and s3.url == "s3://bucket/some/prefix"
    with pytest.raises(ValueError, match="names no bucket"):
        open_blob_store(BlobSettings(url="s3:///prefix"))
    with pytest.raises(ValueError, match="use file:///path or s3://"):
        open_blob_store(BlobSettings(url="gs://bucket"))


def test_unreachable_object_storage_is_unavailable(tmp_path):
    """Clients see UNAVAILABLE (retry) with nothing of the deployment in the message."""
    store = open_blob_store(
        BlobSettings(
            url="s3://bucket/prefix", endpoint_url=f"http://127.0.0.1:{free_port()}",
            region="us-east-1", access_key_id="x", secret_access_key="y", max_attempts=1,
            spool_dir=tmp_path / "spool",
        )
    )  # fmt: skip
    for action in (
        lambda: store.exists("a" * 64),
        lambda: list(store.read_chunks("a" * 64, 10)),
        lambda: store.put("k", b"x"),
        lambda: push(store, b"bytes"),
        lambda: store.sweep(set(), 0, 0),
    ):
        with pytest.raises(Unavailable, match="object storage is unreachable") as err:
            action()
        assert "127.0.0.1" not in err.value.message
    assert list(store.spool_dir.iterdir()) == [], "a failed commit leaves no spool file"
