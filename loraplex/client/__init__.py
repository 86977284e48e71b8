"""Typed Python clients for the loraplex services."""

from loraplex.client.base import ClientConfig, LoraplexClientError
from loraplex.client.inference import InferenceClient
from loraplex.client.registry import RegistryClient
from loraplex.client.retrieval import RetrievalClient
from loraplex.client.training import TrainingClient

__all__ = [
    "ClientConfig",
    "InferenceClient",
    "LoraplexClientError",
    "RegistryClient",
    "RetrievalClient",
    "TrainingClient",
]
