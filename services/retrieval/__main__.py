"""`python -m services.retrieval [migrate]`: settings from the environment, then serve.

`migrate` upgrades the database to the newest schema and exits (serving does too).
"""

from __future__ import annotations

import sys

from services.common.migrations import migrate_main
from services.common.server import run
from services.retrieval.app import RetrievalApp
from services.retrieval.settings import RetrievalSettings
from services.retrieval.store import SCHEMA


def main() -> None:
    settings = RetrievalSettings()
    if sys.argv[1:] == ["migrate"]:
        migrate_main(settings, SCHEMA, settings.resolved_database_url())
        return
    run(settings, lambda _: RetrievalApp(settings))


if __name__ == "__main__":
    main()
