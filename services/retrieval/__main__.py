"""`python -m services.retrieval`: settings from the environment, then serve."""

from __future__ import annotations

from services.common.server import run
from services.retrieval.app import RetrievalApp
from services.retrieval.settings import RetrievalSettings


def main() -> None:
    settings = RetrievalSettings()
    run(settings, lambda _: RetrievalApp(settings))


if __name__ == "__main__":
    main()
