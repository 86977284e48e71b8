"""Globex can see nothing of acme's: every RPC answers NOT_FOUND or an empty page."""

from __future__ import annotations

import grpc
import pytest

from loraplex.training.v1 import training_service_pb2 as pb
from services.common.testing import running_server
from services.training.app import TrainingApp
from tests.integration.training.conftest import (
    ACME,
    GLOBEX,
    MemoryPublisher,
    settings_for,
    stub,
    toy_spec,
    upload,
)
from tests.unit.training.tiny_model import toy_rows

pytestmark = pytest.mark.integration


async def test_cross_tenant_access_is_not_found_on_every_rpc(tmp_path, models_dir):
    app = TrainingApp(settings_for(tmp_path, models_dir), publisher=MemoryPublisher())
    async with running_server(app.settings, app) as srv:
        api = stub(srv.channel)
        dataset = await upload(srv.channel, toy_rows(1), "colors")
        spec = toy_spec(dataset.id, max_steps=1_000_000)
        job = (await api.CreateJob(pb.CreateJobRequest(spec=spec), metadata=ACME)).job

        async def denied(call) -> None:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert "acme" not in err.value.details()

        await denied(api.GetDataset(pb.GetDatasetRequest(id=dataset.id), metadata=GLOBEX))
        await denied(api.GetJob(pb.GetJobRequest(id=job.id), metadata=GLOBEX))
        await denied(api.CancelJob(pb.CancelJobRequest(id=job.id), metadata=GLOBEX))
        stream = api.StreamJobEvents(pb.StreamJobEventsRequest(id=job.id), metadata=GLOBEX)
        await denied(stream.read())
        await denied(api.CreateJob(pb.CreateJobRequest(spec=spec), metadata=GLOBEX))
        listed = await api.ListJobs(pb.ListJobsRequest(), metadata=GLOBEX)
        assert list(listed.jobs) == []
        assert (
            list((await api.ListDatasets(pb.ListDatasetsRequest(), metadata=GLOBEX)).datasets) == []
        )
        # Names are per tenant: globex may use the same dataset name.
        theirs = await upload(srv.channel, toy_rows(1), "colors", metadata=GLOBEX)
        assert theirs.id != dataset.id
        mine = await api.ListDatasets(pb.ListDatasetsRequest(), metadata=ACME)
        assert [d.id for d in mine.datasets] == [dataset.id]
        # acme's job is untouched by globex's attempts.
        still = (await api.GetJob(pb.GetJobRequest(id=job.id), metadata=ACME)).job
        assert still.state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING)
        await api.CancelJob(pb.CancelJobRequest(id=job.id), metadata=ACME)


async def test_bad_dataset_upload_names_the_line(tmp_path, models_dir):
    app = TrainingApp(settings_for(tmp_path, models_dir), publisher=MemoryPublisher())
    async with running_server(app.settings, app) as srv:
        bad = b'{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": \n'
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await upload(srv.channel, bad, "broken")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("line 2: invalid JSON")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await upload(srv.channel, toy_rows(1), "colors")
            await upload(srv.channel, toy_rows(1), "colors")
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        listed = await stub(srv.channel).ListDatasets(pb.ListDatasetsRequest(), metadata=ACME)
        assert [d.name for d in listed.datasets] == ["colors"]
