"""`python -m services.training`: settings from the environment, then serve."""

from __future__ import annotations

from services.common.server import run
from services.training.app import TrainingApp
from services.training.settings import TrainingSettings


def main() -> None:
    run(TrainingSettings(), TrainingApp)


if __name__ == "__main__":
    main()
