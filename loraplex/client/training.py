"""Training client: upload datasets, start/follow/cancel fine-tuning jobs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from loraplex.client.base import BaseClient
from loraplex.training.v1 import training_service_pb2 as pb
from loraplex.training.v1 import training_service_pb2_grpc as pb_grpc

CHUNK_BYTES = 1024 * 1024
#: Called with (bytes done, bytes total) as an upload progresses.
Progress = Callable[[int, int], None]
FINAL_STATES = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)
FINAL_EVENTS = ("succeeded", "failed", "cancelled")

METHODS = {
    "lora": pb.METHOD_LORA,
    "qlora": pb.METHOD_QLORA,
    "ia3": pb.METHOD_IA3,
    "prompt_tuning": pb.METHOD_PROMPT_TUNING,
    "prefix_tuning": pb.METHOD_PREFIX_TUNING,
    "p_tuning": pb.METHOD_P_TUNING,
    "full": pb.METHOD_FULL,
    "last_layers": pb.METHOD_LAST_LAYERS,
}
TASKS = {"instruction": pb.TASK_INSTRUCTION, "continued_pretraining": pb.TASK_CONTINUED_PRETRAINING}
FORMATS = {
    "": pb.DATASET_FORMAT_UNSPECIFIED,
    "prompt_completion": pb.DATASET_FORMAT_PROMPT_COMPLETION,
    "messages": pb.DATASET_FORMAT_MESSAGES,
    "text": pb.DATASET_FORMAT_TEXT,
    "grounded_qa": pb.DATASET_FORMAT_GROUNDED_QA,
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class TrainingClient(BaseClient):
    service = "training"

    @property
    def stub(self) -> pb_grpc.TrainingServiceStub:
        return pb_grpc.TrainingServiceStub(self.channel)

    def upload_dataset(
        self,
        path: Path | str,
        name: str = "",
        *,
        format: str = "",
        progress: Progress | None = None,
        timeout: float | None = 600,
    ) -> pb.Dataset:
        """Streams a JSONL file; the server validates every row before storing it."""
        path = Path(path)
        size = path.stat().st_size
        header = pb.DatasetHeader(
            name=name or path.stem, format=FORMATS[format], size_bytes=size, sha256=_sha256(path)
        )

        def requests() -> Iterator[pb.UploadDatasetRequest]:
            yield pb.UploadDatasetRequest(header=header)
            done = 0
            with path.open("rb") as handle:
                while data := handle.read(CHUNK_BYTES):
                    yield pb.UploadDatasetRequest(data=data)
                    done += len(data)
                    if progress:
                        progress(done, size)

        return self._call(self.stub.UploadDataset, requests(), timeout).dataset

    def get_dataset(self, dataset_id: str) -> pb.Dataset:
        return self._call(self.stub.GetDataset, pb.GetDatasetRequest(id=dataset_id)).dataset

    def list_datasets(self, page_size: int = 100) -> Iterator[pb.Dataset]:
        request = pb.ListDatasetsRequest(page_size=page_size)
        return self._paged(self.stub.ListDatasets, request, "datasets")

    def create_job(
        self,
        base_model: str,
        train: list[str] | dict[str, float],
        *,
        method: str = "lora",
        task: str = "instruction",
        validation: str = "",
        test: str = "",
        hyperparameters: dict[str, Any] | None = None,
        lora: dict[str, Any] | None = None,
        num_virtual_tokens: int = 0,
        adapter_name: str = "",
        promote_alias: str = "",
        promote_if: str = "",
        validation_ratio: float = 0.0,
        test_ratio: float = 0.0,
    ) -> pb.Job:
        """`train` is dataset ids, or {dataset id: weight} for a multi-task mix."""
        weights = train if isinstance(train, dict) else dict.fromkeys(train, 1.0)
        spec = pb.JobSpec(
            base_model=base_model,
            method=METHODS[method],
            task=TASKS[task],
            train=[pb.DatasetInput(dataset_id=d, weight=w) for d, w in weights.items()],
            validation_dataset_id=validation,
            test_dataset_id=test,
            validation_ratio=validation_ratio,
            test_ratio=test_ratio,
            hyperparameters=pb.Hyperparameters(**(hyperparameters or {})),
            prompt=pb.PromptConfig(num_virtual_tokens=num_virtual_tokens),
            publish=pb.PublishConfig(
                adapter_name=adapter_name, promote_alias=promote_alias, promote_if=promote_if
            ),
        )
        if lora is not None:
            spec.lora.CopyFrom(pb.LoraConfig(**lora))
        return self._call(self.stub.CreateJob, pb.CreateJobRequest(spec=spec)).job

    def get_job(self, job_id: str) -> pb.Job:
        return self._call(self.stub.GetJob, pb.GetJobRequest(id=job_id)).job

    def list_jobs(self, page_size: int = 100) -> Iterator[pb.Job]:
        request = pb.ListJobsRequest(page_size=page_size)
        return self._paged(self.stub.ListJobs, request, "jobs")

    def cancel_job(self, job_id: str) -> pb.Job:
        return self._call(self.stub.CancelJob, pb.CancelJobRequest(id=job_id)).job

    def events(
        self, job_id: str, *, follow: bool = True, after_sequence: int = 0
    ) -> Iterator[pb.StreamJobEventsResponse]:
        """The job's events in order; with `follow`, the live tail until the job ends.

        After a dropped stream, call again with the last sequence seen.
        """
        request = pb.StreamJobEventsRequest(
            id=job_id, after_sequence=after_sequence, history_only=not follow
        )
        yield from self._stream(self.stub.StreamJobEvents, request, timeout=0 if follow else None)

    def wait(self, job_id: str) -> pb.Job:
        """Follows the events until the job ends and returns its final record."""
        for event in self.events(job_id, follow=True):
            if event.WhichOneof("event") in FINAL_EVENTS:
                break
        return self.get_job(job_id)
