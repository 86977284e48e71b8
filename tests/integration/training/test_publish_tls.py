"""Training publishes to a registry that demands mutual TLS (issue 13, defect 3).

Before the kit's call layer, training pushed through the SDK in a thread over a
plaintext channel: against the README's mutual-TLS set-up every publish failed.
"""

from __future__ import annotations

import pytest

from loraplex.registry.v1 import registry_service_pb2 as reg_pb
from loraplex.registry.v1 import registry_service_pb2_grpc as reg_grpc
from loraplex.training.v1 import training_service_pb2 as pb
from services.common.channels import open_channel
from services.common.settings import ClientTlsSettings
from services.common.testing import TEST_SERVICE_KEYS, running_server, tenant_metadata
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from services.training.app import TrainingApp
from tests.integration.test_tls import make_pki
from tests.integration.training.conftest import ACME, collect_events, settings_for, stub, toy_spec
from tests.integration.training.conftest import upload as upload_dataset
from tests.unit.training.tiny_model import toy_rows

pytestmark = pytest.mark.integration


async def test_job_publishes_over_mutual_tls(tmp_path, models_dir):
    make_pki(tmp_path)
    client_tls = ClientTlsSettings(
        ca_file=tmp_path / "ca.crt",
        cert_file=tmp_path / "client.crt",
        key_file=tmp_path / "client.key",
    )
    registry_settings = RegistrySettings(
        data_dir=tmp_path / "registry-data",
        tls_cert_file=tmp_path / "server.crt",
        tls_key_file=tmp_path / "server.key",
        tls_client_ca_file=tmp_path / "ca.crt",
    )
    async with running_server(registry_settings, RegistryApp(registry_settings)) as registry:
        settings = settings_for(
            tmp_path / "training-data",
            models_dir,
            registry_addr=registry.target,
            service_key=TEST_SERVICE_KEYS["training"],
            client_tls=client_tls,
        )
        async with running_server(settings, TrainingApp(settings)) as training:
            dataset = await upload_dataset(training.channel, toy_rows(4), "colors")
            spec = toy_spec(dataset.id, max_steps=2)
            spec.publish.CopyFrom(
                pb.PublishConfig(adapter_name="acme/colors", promote_alias="prod")
            )
            job = (
                await stub(training.channel).CreateJob(
                    pb.CreateJobRequest(spec=spec), metadata=ACME
                )
            ).job
            events = await collect_events(training.channel, job.id)
            kinds = [e.WhichOneof("event") for e in events]
            assert kinds[-1] == "succeeded", [str(e) for e in events[-2:]]
            published = next(e.published for e in events if e.WhichOneof("event") == "published")
            assert published.adapter_ref == "acme/colors@1"
            assert published.promoted_alias == "prod"

        channel = open_channel(registry.target, client_tls)
        try:
            version = (
                await reg_grpc.RegistryServiceStub(channel).GetAdapter(
                    reg_pb.GetAdapterRequest(ref="acme/colors@prod"),
                    metadata=tenant_metadata("acme"),
                    timeout=10,
                )
            ).version
        finally:
            await channel.close()
        assert version.version == 1 and version.lineage["training_job"] == job.id
