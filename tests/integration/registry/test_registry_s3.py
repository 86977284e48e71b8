"""The registry API with its blobs in S3-compatible object storage.

The object store is moto's standalone server on loopback, an EMULATOR of S3 (no
MinIO is installable here); see tests/object_store.py.
"""

from __future__ import annotations

import grpc
import pytest
from safetensors.numpy import load_file, save_file

from loraplex.client.base import LoraplexClientError
from loraplex.client.registry import sha256_file
from services.common.blob_s3 import S3BlobStore
from services.common.blobstore import BlobSettings, open_blob_store
from services.common.testing import server_thread
from services.registry.app import RegistryApp
from tests.integration.registry.adapters import make_big_adapter, make_lora_adapter
from tests.integration.registry.conftest import client_for, registry_settings
from tests.object_store import s3_endpoint, s3_fields, s3_settings  # noqa: F401  (fixtures)
from tests.postgres import postgres_bin, postgres_server

pytestmark = pytest.mark.integration

FILES = ("adapter_config.json", "adapter_model.safetensors")


def bucket_keys(store: S3BlobStore) -> set[str]:
    """Everything under the store's prefix, and any multipart upload left open."""
    listed = store.client.list_objects_v2(Bucket=store.bucket).get("Contents", [])
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    return {o["Key"] for o in listed} | {f"upload:{u['Key']}" for u in uploads}


def blob_keys(store: S3BlobStore, *digests: str) -> set[str]:
    return {store._blob_key(d) for d in digests}


@pytest.fixture
def s3_registry(tmp_path, s3_settings: BlobSettings):  # noqa: F811
    settings = registry_settings(tmp_path / "data", **s3_fields(s3_settings))
    store = open_blob_store(s3_settings)
    with server_thread(settings, RegistryApp(settings)) as server:
        yield server, store


def test_push_pull_delete_through_s3_byte_identical(s3_registry, tmp_path):
    server, store = s3_registry
    big = make_big_adapter(tmp_path / "big", megabytes=12)  # over a part: multipart upload
    small = make_lora_adapter(tmp_path / "small")
    with client_for(server, "acme") as acme, client_for(server, "globex") as globex:
        first = acme.push("acme/big", big)
        second = acme.push("acme/small", small)
        twin = acme.push("acme/twin", small)  # same bytes: the same blobs, stored once
        digests = {f.sha256 for v in (first, second) for f in v.files}
        assert bucket_keys(store) == blob_keys(store, *digests)
        assert not list((tmp_path / "data" / "registry").glob("blobs/sha256/*/*")), (
            "nothing went to local files"
        )

        for name, folder in (("acme/big", big), ("acme/small", small), ("acme/twin", small)):
            acme.pull(name, tmp_path / "out" / name)
            for file in FILES:
                assert sha256_file(tmp_path / "out" / name / file) == sha256_file(folder / file)

        with pytest.raises(LoraplexClientError) as err:
            globex.pull("acme/small", tmp_path / "stolen")
        assert err.value.code == grpc.StatusCode.NOT_FOUND

        assert acme.delete("acme/small") == [1]
        assert bucket_keys(store) == blob_keys(store, *digests), "acme/twin still uses them"
        acme.delete("acme/twin")
        acme.delete("acme/big")
        assert bucket_keys(store) == set()
        assert twin.version == 1


def test_refused_push_stores_nothing_in_s3(s3_registry, tmp_path):
    server, store = s3_registry
    poisoned = make_lora_adapter(tmp_path / "nan")
    weights = load_file(poisoned / "adapter_model.safetensors")
    next(iter(weights.values()))[0, 0] = float("nan")
    save_file(weights, str(poisoned / "adapter_model.safetensors"))
    with client_for(server, "acme") as acme:
        with pytest.raises(LoraplexClientError) as err:
            acme.push("acme/bad", make_lora_adapter(tmp_path / "a"), expect_base_model="other/m")
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(LoraplexClientError) as err:
            acme.push("acme/bad", poisoned)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert bucket_keys(store) == set()
    assert not list(store.spool_dir.iterdir()), "no spooled upload left behind"


def test_lost_blob_is_data_loss_and_orphans_are_swept_at_start(tmp_path, s3_settings):  # noqa: F811
    store = open_blob_store(s3_settings)
    orphan = store.push_file(make_lora_adapter(tmp_path / "o", seed=9) / FILES[1])
    settings = registry_settings(tmp_path / "data", **s3_fields(s3_settings))
    with server_thread(settings, RegistryApp(settings)) as server, client_for(server, "acme") as c:
        assert not store.exists(orphan), "start-up sweep removed the unreferenced blob"
        version = c.push("acme/lost", make_lora_adapter(tmp_path / "a"))
        weights = next(f.sha256 for f in version.files if f.path == FILES[1])
        store.delete_blobs([weights])
        with pytest.raises(LoraplexClientError) as err:
            c.pull("acme/lost", tmp_path / "out")
        assert err.value.code == grpc.StatusCode.DATA_LOSS


@pytest.mark.skipif(postgres_bin() is None, reason="no PostgreSQL server installed")
def test_replicas_without_shared_files_share_s3(tmp_path, s3_settings):  # noqa: F811
    """Two replicas on one PostgreSQL, each with its own data folder: no RWX volume."""
    adapter = make_lora_adapter(tmp_path / "adapter")
    with postgres_server() as url:
        shared = {**s3_fields(s3_settings), "blob_spool_dir": None, "database_url": url}
        one = registry_settings(tmp_path / "one", **shared)
        two = registry_settings(tmp_path / "two", **shared)
        with (
            server_thread(one, RegistryApp(one)) as first,
            server_thread(two, RegistryApp(two)) as second,
            client_for(first, "acme") as a,
            client_for(second, "acme") as b,
        ):
            a.push("acme/shared", adapter)
            b.pull("acme/shared", tmp_path / "out")
            for file in FILES:
                assert sha256_file(tmp_path / "out" / file) == sha256_file(adapter / file)
            assert list((tmp_path / "one" / "registry" / "blobs" / "tmp").iterdir()) == []
            b.delete("acme/shared")
            assert bucket_keys(open_blob_store(s3_settings)) == set()
