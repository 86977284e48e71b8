"""A finished job publishes to a real registry server, with lineage, metrics and the alias."""

from __future__ import annotations

import json

import pytest

from loraplex.registry.v1 import registry_service_pb2 as reg_pb
from loraplex.registry.v1 import registry_service_pb2_grpc as reg_grpc
from loraplex.training.v1 import training_service_pb2 as pb
from services.common.testing import TEST_SERVICE_KEYS, running_server, tenant_metadata
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from services.training.app import TrainingApp
from tests.integration.training.conftest import (
    ACME,
    collect_events,
    settings_for,
    stub,
    toy_spec,
    upload,
)
from tests.unit.training.tiny_model import toy_rows

pytestmark = pytest.mark.integration


async def test_job_publishes_to_the_registry_with_lineage_and_gate(tmp_path, models_dir):
    registry_settings = RegistrySettings(data_dir=tmp_path / "registry-data")
    async with running_server(registry_settings, RegistryApp(registry_settings)) as registry:
        settings = settings_for(
            tmp_path / "training-data",
            models_dir,
            registry_addr=registry.target,
            service_key=TEST_SERVICE_KEYS["training"],
        )
        app = TrainingApp(settings)
        async with running_server(settings, app) as training:
            dataset = await upload(training.channel, toy_rows(4), "colors")
            spec = toy_spec(dataset.id, epochs=10)
            spec.publish.CopyFrom(
                pb.PublishConfig(
                    adapter_name="acme/colors", promote_alias="prod", promote_if="test_loss<1000"
                )
            )
            job = (
                await stub(training.channel).CreateJob(
                    pb.CreateJobRequest(spec=spec), metadata=ACME
                )
            ).job
            events = await collect_events(training.channel, job.id)
            published = next(e.published for e in events if e.WhichOneof("event") == "published")
            assert published.adapter_ref == "acme/colors@1"
            assert published.promoted_alias == "prod"

        registry_stub = reg_grpc.RegistryServiceStub(registry.channel)
        version = (
            await registry_stub.GetAdapter(
                reg_pb.GetAdapterRequest(ref="acme/colors@prod"), metadata=tenant_metadata("acme")
            )
        ).version
        assert version.version == 1 and list(version.aliases) == ["prod"]
        assert version.peft.peft_type == "LORA" and version.peft.rank == 8
        assert version.peft.base_model == "tiny"
        assert sorted(f.path for f in version.files) == [
            "adapter_config.json",
            "adapter_model.safetensors",
        ]
        assert version.lineage["dataset_sha256"] == dataset.sha256
        assert json.loads(version.lineage["hyperparameters"])["epochs"] == 10
        assert "test_loss" in version.metrics and "general_perplexity_after" in version.metrics
        # The training service acted for acme: globex sees nothing.
        listing = await registry_stub.ListAdapters(
            reg_pb.ListAdaptersRequest(), metadata=tenant_metadata("globex")
        )
        assert list(listing.adapters) == []


async def test_publishing_without_a_registry_is_refused_up_front(tmp_path, models_dir):
    import grpc

    settings = settings_for(tmp_path / "training-data", models_dir)  # no service key
    app = TrainingApp(settings)
    async with running_server(settings, app) as training:
        dataset = await upload(training.channel, toy_rows(1), "colors")
        spec = toy_spec(dataset.id, max_steps=1)
        spec.publish.adapter_name = "acme/colors"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub(training.channel).CreateJob(pb.CreateJobRequest(spec=spec), metadata=ACME)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "LORAPLEX_TRAINING_SERVICE_KEY" in err.value.details()
