"""Every registry RPC through the SDK against a real server on loopback."""

from __future__ import annotations

import json
import tarfile
import threading
import time

import grpc
import numpy as np
import pytest
from safetensors.numpy import save_file

from loraplex.client.base import LoraplexClientError
from loraplex.client.registry import sha256_file
from loraplex.registry.v1 import registry_service_pb2 as pb
from tests.integration.registry.adapters import BASE_MODEL, make_lora_adapter

pytestmark = pytest.mark.integration


def test_push_get_download_round_trip(acme, adapter_dir, tmp_path):
    version = acme.push(
        "acme/support", adapter_dir, lineage={"dataset_sha256": "ab" * 32},
        metrics={"test_loss": 1.25}, aliases=["staging"], description="first",
    )  # fmt: skip
    assert (version.name, version.version) == ("acme/support", 1)
    assert version.peft.peft_type == "LORA" and version.peft.rank == 8
    assert version.peft.base_model == BASE_MODEL
    assert list(version.peft.target_modules) == ["q_proj", "v_proj"]
    assert version.lineage["dataset_sha256"] == "ab" * 32
    assert version.metrics["test_loss"] == 1.25
    assert list(version.aliases) == ["staging"]

    second = acme.push("acme/support", make_lora_adapter(tmp_path / "v2", seed=1))
    assert second.version == 2
    assert acme.get("acme/support").version == 2  # no suffix means latest
    assert acme.get("acme/support@1").digest == version.digest
    assert acme.get("acme/support@staging").version == 1

    pulled = acme.pull("acme/support@staging", tmp_path / "pulled")
    assert pulled.version == 1
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert sha256_file(tmp_path / "pulled" / name) == sha256_file(adapter_dir / name)


def test_tar_push_strips_the_top_folder(acme, adapter_dir, tmp_path):
    archive = tmp_path / "adapter.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(adapter_dir, arcname="my-adapter")
    version = acme.push("acme/tarred", archive)
    assert sorted(f.path for f in version.files) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    acme.pull("acme/tarred", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["r"] == 8


def test_list_pages_and_filters_by_base_model(acme, tmp_path):
    for i in range(5):
        base = BASE_MODEL if i % 2 == 0 else "other/model"
        acme.push(f"acme/a{i}", make_lora_adapter(tmp_path / f"a{i}", base_model=base, seed=i))
    names = [s.name for s in acme.list(page_size=2)]
    assert names == [f"acme/a{i}" for i in range(5)]
    filtered = [s.name for s in acme.list(base_model="other/model", page_size=1)]
    assert filtered == ["acme/a1", "acme/a3"]
    acme.push("acme/a0", make_lora_adapter(tmp_path / "a0b", seed=9))
    (summary,) = [s for s in acme.list() if s.name == "acme/a0"]
    assert summary.version_count == 2 and summary.latest.version == 2
    versions = [v.version for v in acme.list_versions("acme/a0", page_size=1)]
    assert versions == [2, 1]


def test_aliases_move_stage_and_delete(acme, adapter_dir, tmp_path):
    acme.push("acme/bot", adapter_dir)
    acme.push("acme/bot", make_lora_adapter(tmp_path / "v2", seed=2))
    acme.set_alias("acme/bot", "prod", 1)
    assert acme.get("acme/bot@prod").version == 1
    state = acme.set_alias("acme/bot", "prod", 2, stage_seconds=1)
    assert (state.version, state.staged_version) == (1, 2)
    assert acme.get("acme/bot@prod").version == 1  # watchers pre-load during the stage
    time.sleep(1.2)
    assert acme.get("acme/bot@prod").version == 2
    assert list(acme.get("acme/bot@2").aliases) == ["prod"]
    acme.set_alias("acme/bot", "prod", 1)  # roll back
    assert acme.get("acme/bot@prod").version == 1
    acme.delete_alias("acme/bot", "prod")
    with pytest.raises(LoraplexClientError) as err:
        acme.get("acme/bot@prod")
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(LoraplexClientError) as err:
        acme.set_alias("acme/bot", "prod", 7)
    assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_delete_refuses_aliased_versions_unless_forced(
    acme, adapter_dir, tmp_path, registry_server
):
    acme.push("acme/x", adapter_dir, aliases=["prod"])
    acme.push("acme/x", make_lora_adapter(tmp_path / "v2", seed=3))
    with pytest.raises(LoraplexClientError) as err:
        acme.delete("acme/x", 1)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "prod" in err.value.message
    assert acme.delete("acme/x", 2) == [2]
    assert acme.delete("acme/x", 0, force=True) == [1]
    with pytest.raises(LoraplexClientError) as err:
        acme.get("acme/x")
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    blob_dir = registry_server.settings.data_dir / "registry" / "blobs" / "sha256"
    assert not list(blob_dir.glob("*/*")), "deleted versions' blobs are removed"


def test_identical_content_is_stored_once(acme, adapter_dir, registry_server):
    acme.push("acme/one", adapter_dir)
    acme.push("acme/two", adapter_dir)
    blob_dir = registry_server.settings.data_dir / "registry" / "blobs" / "sha256"
    assert len(list(blob_dir.glob("*/*"))) == 2
    acme.delete("acme/one")
    assert len(list(blob_dir.glob("*/*"))) == 2, "blobs still used by acme/two stay"
    assert acme.pull("acme/two", adapter_dir.parent / "two").version == 1


def test_compatibility(acme, adapter_dir, tmp_path):
    acme.push("acme/c", adapter_dir)
    ok = acme.check_compatibility(
        "acme/c", base_model="/models/SmolLM2-135M-Instruct", max_rank=16,
        available_modules=["q_proj", "k_proj", "v_proj", "o_proj"], supported_peft_types=["LORA"],
    )  # fmt: skip
    assert ok.version == 1
    with pytest.raises(LoraplexClientError) as err:
        acme.check_compatibility(
            "acme/c", base_model="meta-llama/Llama-3-8B", max_rank=4, available_modules=["q_proj"]
        )
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    for reason in ("Llama-3-8B", "rank 8 exceeds the maximum rank 4", "v_proj"):
        assert reason in err.value.message
    ia3 = make_lora_adapter(tmp_path / "ia3", peft_type="IA3")
    acme.push("acme/ia3", ia3)
    with pytest.raises(LoraplexClientError) as err:
        acme.check_compatibility("acme/ia3", supported_peft_types=["LORA"])
    assert "IA3 is not served" in err.value.message
    with pytest.raises(LoraplexClientError) as err:
        acme.push("acme/c", adapter_dir, expect_base_model="other/base")
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(LoraplexClientError) as err:
        acme.push("acme/c", adapter_dir, max_rank=4)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert [v.version for v in acme.list_versions("acme/c")] == [1]


def test_watch_streams_pushes_and_alias_moves(acme, globex, adapter_dir, tmp_path):
    acme.push("acme/w", adapter_dir, aliases=["prod"])
    seen: list[pb.WatchAdaptersResponse] = []
    foreign: list[pb.WatchAdaptersResponse] = []

    def follow(client, sink, count):
        try:
            for event in client.watch(include_current=True):
                sink.append(event)
                if len(sink) >= count:
                    return
        except LoraplexClientError as error:  # the channel closes at teardown
            assert error.code == grpc.StatusCode.CANCELLED

    watcher = threading.Thread(target=follow, args=(acme, seen, 4), daemon=True)
    spy = threading.Thread(target=follow, args=(globex, foreign, 1), daemon=True)
    watcher.start()
    spy.start()
    time.sleep(0.5)
    acme.push("acme/w", make_lora_adapter(tmp_path / "v2", seed=4))
    acme.set_alias("acme/w", "prod", 2, stage_seconds=30)
    acme.delete_alias("acme/w", "prod")
    watcher.join(timeout=15)
    kinds = [(e.kind, e.alias, e.version) for e in seen]
    assert kinds == [
        (pb.ADAPTER_EVENT_KIND_ALIAS_SET, "prod", 1),  # current state first
        (pb.ADAPTER_EVENT_KIND_VERSION_PUSHED, "", 2),
        (pb.ADAPTER_EVENT_KIND_ALIAS_SET, "prod", 2),
        (pb.ADAPTER_EVENT_KIND_ALIAS_DELETED, "prod", 0),
    ]
    staged = seen[2]
    assert staged.previous_version == 1
    assert staged.effective_at.ToSeconds() - staged.occurred_at.ToSeconds() >= 29
    assert seen[1].sequence < seen[2].sequence < seen[3].sequence
    # resume after a sequence number replays exactly what followed
    resumed = []
    for event in acme.watch(after_sequence=seen[1].sequence):
        resumed.append(event.sequence)
        if len(resumed) == 2:
            break
    assert resumed == [seen[2].sequence, seen[3].sequence]
    assert foreign == [], "another tenant's watch sees nothing"


def test_safetensors_whose_header_length_starts_with_0x80_is_not_taken_for_a_pickle(acme, tmp_path):
    """One F32 [8, 576] tensor makes a 128-byte header: its first byte is a pickle's 0x80."""
    folder = tmp_path / "one-tensor"
    folder.mkdir()
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    weights = np.random.default_rng(0).standard_normal((8, 576)).astype(np.float32)
    save_file({key: weights}, str(folder / "adapter_model.safetensors"))
    assert (folder / "adapter_model.safetensors").read_bytes()[0] == 0x80
    config = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    assert acme.push("acme/one-tensor", folder).version == 1
    acme.pull("acme/one-tensor", tmp_path / "out")
    assert sha256_file(tmp_path / "out" / "adapter_model.safetensors") == sha256_file(
        folder / "adapter_model.safetensors"
    )


def test_download_checks_compatibility_before_sending_bytes(acme, adapter_dir):
    """A cold load is one call: DownloadAdapter resolves, checks the engine, then streams."""
    acme.push("acme/c", adapter_dir)
    fits = pb.DownloadAdapterRequest(
        ref="acme/c", base_model="/models/SmolLM2-135M-Instruct", max_rank=16,
        available_modules=["q_proj", "v_proj"], supported_peft_types=["LORA"],
    )  # fmt: skip
    messages = list(acme._stream(acme.stub.DownloadAdapter, fits, 30))
    assert messages[0].version.version == 1 and len(messages) > 1
    too_small = pb.DownloadAdapterRequest(ref="acme/c", max_rank=4)
    with pytest.raises(LoraplexClientError) as err:
        list(acme._stream(acme.stub.DownloadAdapter, too_small, 30))
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "rank 8 exceeds the maximum rank 4" in err.value.message
    hostile = pb.DownloadAdapterRequest(ref="acme/c", available_modules=["m"] * 5000)
    with pytest.raises(LoraplexClientError) as err:
        list(acme._stream(acme.stub.DownloadAdapter, hostile, 30))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
