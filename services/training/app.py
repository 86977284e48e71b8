"""Wires the training service's parts together for the server bootstrap."""

from __future__ import annotations

import logging

import grpc

from loraplex.training.v1 import training_service_pb2 as pb
from loraplex.training.v1 import training_service_pb2_grpc as pb_grpc
from services.common.db import make_engine
from services.training.executors import Executor, LocalExecutor
from services.training.jobs import JobLimits, JobManager
from services.training.publisher import Publisher, RegistryPublisher
from services.training.servicer import TrainingServicer
from services.training.settings import TrainingSettings
from services.training.store import TrainingStore
from services.training.uploads import DatasetManager

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TrainingService"].full_name


log = logging.getLogger(__name__)


def make_executor(settings: TrainingSettings) -> Executor:
    if settings.executor == "local":
        return LocalExecutor(settings.data_dir)
    if settings.executor == "kubernetes":
        from services.training.k8s import KubernetesExecutor

        return KubernetesExecutor(
            settings.data_dir,
            settings.k8s_namespace,
            settings.k8s_image,
            settings.k8s_data_pvc,
            cpu=settings.k8s_cpu,
            memory=settings.k8s_memory,
            gpus=settings.k8s_gpus,
        )
    raise ValueError(f"executor must be 'local' or 'kubernetes', not {settings.executor!r}")


class TrainingApp:
    service_names = (SERVICE_NAME,)

    def __init__(
        self,
        settings: TrainingSettings,
        publisher: Publisher | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.settings = settings
        self.servicer = TrainingServicer()
        self.publisher = publisher
        self.executor = executor
        self.jobs: JobManager | None = None

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_TrainingServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        """Opens the database and requeues the jobs a previous run left running."""
        settings = self.settings
        root = settings.service_dir("training")
        self.engine = make_engine(settings.resolved_database_url())
        store = TrainingStore(self.engine)
        datasets = DatasetManager(
            store, root / "datasets", settings.max_dataset_bytes, settings.max_row_bytes
        )
        publisher = self.publisher
        if publisher is None and settings.registry_addr and settings.service_key:
            publisher = RegistryPublisher(settings.registry_addr, settings.service_key)
        if publisher is None:
            log.warning("no LORAPLEX_TRAINING_SERVICE_KEY: jobs cannot publish to the registry")
        self.jobs = JobManager(
            store,
            datasets,
            self.executor or make_executor(settings),
            publisher,
            settings.data_dir,
            settings.resolved_models_dir(),
            JobLimits(
                workers=settings.workers,
                cancel_grace_seconds=settings.cancel_grace_seconds,
                max_resumes=settings.max_resumes,
                poll_seconds=settings.event_poll_seconds,
            ),
        )
        await self.jobs.start()
        self.servicer.attach(self.jobs, datasets)

    async def close(self) -> None:
        if self.jobs is not None:
            await self.jobs.close()
            self.engine.dispose()
