"""`python -m services.training [migrate]`: settings from the environment, then serve.

`migrate` upgrades the database to the newest schema and exits (serving does too).
"""

from __future__ import annotations

import sys

from services.common.migrations import migrate_main
from services.common.server import run
from services.training.app import TrainingApp
from services.training.settings import TrainingSettings
from services.training.store import SCHEMA


def main() -> None:
    settings = TrainingSettings()
    if sys.argv[1:] == ["migrate"]:
        migrate_main(settings, SCHEMA, settings.resolved_database_url())
        return
    run(settings, TrainingApp)


if __name__ == "__main__":
    main()
