"""Training's List RPCs page through the common helper: stable pages, precise errors.

Before, a well-formed token of the wrong shape reached the store's tuple unpacking
and came back INTERNAL; now every List RPC answers INVALID_ARGUMENT for it.
"""

from __future__ import annotations

import grpc
import pytest

from loraplex.training.v1 import training_service_pb2 as pb
from services.common.paging import encode_token
from services.common.testing import running_server
from services.training.app import TrainingApp
from tests.integration.training.conftest import (
    ACME,
    GLOBEX,
    MemoryPublisher,
    settings_for,
    stub,
    upload,
)
from tests.unit.training.tiny_model import toy_rows

pytestmark = pytest.mark.integration


async def test_datasets_page_newest_first_and_foreign_tokens_are_invalid(tmp_path, models_dir):
    app = TrainingApp(settings_for(tmp_path, models_dir), publisher=MemoryPublisher())
    async with running_server(app.settings, app) as srv:
        names = [f"set-{i}" for i in range(5)]
        for name in names:
            await upload(srv.channel, toy_rows(1), name)
        await upload(srv.channel, toy_rows(1), "globex-only", metadata=GLOBEX)

        seen, token = [], ""
        for _ in range(5):
            page = await stub(srv.channel).ListDatasets(
                pb.ListDatasetsRequest(page_size=2, page_token=token), metadata=ACME, timeout=10
            )
            seen += [d.name for d in page.datasets]
            token = page.next_page_token
            if not token:
                break
        assert seen == names[::-1]

        for bad in (encode_token("x"), encode_token([1, 2, 3]), encode_token(["a", "b"]), "%%"):
            for call in (
                stub(srv.channel).ListDatasets(
                    pb.ListDatasetsRequest(page_token=bad), metadata=ACME, timeout=10
                ),
                stub(srv.channel).ListJobs(
                    pb.ListJobsRequest(page_token=bad), metadata=ACME, timeout=10
                ),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "page_token" in err.value.details()
