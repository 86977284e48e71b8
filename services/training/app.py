"""The training service on the kit: settings, the `JobManager` core and its servicer."""

from __future__ import annotations

import logging

import grpc

from loraplex.training.v1 import training_service_pb2 as pb
from loraplex.training.v1 import training_service_pb2_grpc as pb_grpc
from services.common.auth import ServiceScopes
from services.common.calls import CallPolicy
from services.common.kit import Kit, Service
from services.training.executors import Executor, LocalExecutor
from services.training.jobs import JobManager
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


class TrainingApp(Service):
    service_names = (SERVICE_NAME,)
    #: The OpenAI gateway serves files and fine-tuning jobs for tenants.
    service_scopes = ServiceScopes(
        SERVICE_NAME,
        gateway=(
            "UploadDataset",
            "GetDataset",
            "ListDatasets",
            "CreateJob",
            "GetJob",
            "ListJobs",
            "CancelJob",
            "StreamJobEvents",
        ),
    )
    starting_message = "the training service is starting; retry shortly"

    def __init__(
        self,
        settings: TrainingSettings,
        publisher: Publisher | None = None,
        executor: Executor | None = None,
        kit: Kit | None = None,
    ) -> None:
        super().__init__(settings, kit)
        self.settings: TrainingSettings = settings
        self.servicer = TrainingServicer()
        self.publisher = publisher
        self.executor = executor
        self.jobs: JobManager | None = None

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_TrainingServiceServicer_to_server(self.servicer, server)

    def _publisher(self) -> Publisher | None:
        settings = self.settings
        if self.publisher is not None:
            return self.publisher
        if settings.registry_addr and settings.service_key:
            registry = self.kit.remote(
                "registry",
                settings.registry_addr,
                settings.service_key,
                CallPolicy(timeout=settings.publish_timeout_seconds),
            )
            return RegistryPublisher(registry, self.kit.blocking)
        log.warning("no LORAPLEX_TRAINING_SERVICE_KEY: jobs cannot publish to the registry")
        return None

    async def start(self) -> None:
        """Opens (and migrates) the database, takes back this replica's own running jobs."""
        settings = self.settings
        engine = self.kit.database(settings.resolved_database_url())
        store = await self.kit.blocking(TrainingStore, engine)
        datasets = DatasetManager(settings, store)
        self.jobs = JobManager(
            settings,
            store,
            datasets,
            self.executor or make_executor(settings),
            self._publisher(),
            self.kit.blocking,
        )
        await self.jobs.start()
        self.servicer.attach(self.jobs)

    async def stop(self) -> None:
        if self.jobs is not None:
            await self.jobs.close()
