"""A tenant's grounded_qa dataset through the real training server: validated, expanded, trained."""

from __future__ import annotations

import grpc
import pytest

from loraplex.training.v1 import training_service_pb2 as pb
from services.common.testing import running_server
from services.training.app import TrainingApp
from tests.integration.training.conftest import (
    ACME,
    MemoryPublisher,
    collect_events,
    settings_for,
    stub,
    toy_spec,
    upload,
)
from tests.unit.training.test_grounded_rows import tenant_rows

pytestmark = pytest.mark.integration


async def test_a_grounded_qa_dataset_trains_as_cite_or_decline_rows(tmp_path, models_dir):
    app = TrainingApp(settings_for(tmp_path, models_dir), publisher=MemoryPublisher())
    async with running_server(app.settings, app) as srv:
        bad = tenant_rows()
        bad[2] = {**bad[2], "passages": []}
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await upload(srv.channel, bad, "qa-bad")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "line 3: 'passages' must list" in err.value.details()

        dataset = await upload(srv.channel, tenant_rows(), "qa")
        assert dataset.format == pb.DATASET_FORMAT_GROUNDED_QA and dataset.rows == 6
        spec = toy_spec(dataset.id, epochs=1, max_seq_length=256, batch_size=4)
        job = (await stub(srv.channel).CreateJob(pb.CreateJobRequest(spec=spec), metadata=ACME)).job
        events = await collect_events(srv.channel, job.id, deadline=300)
        kinds = [e.WhichOneof("event") for e in events]
        assert kinds[-1] == "succeeded", events[-1]
        started = next(e.started for e in events if e.WhichOneof("event") == "started")
        # 4 records left after the 10% + 10% hold-out, at least 2 rows each once expanded
        assert started.total_steps >= 2
