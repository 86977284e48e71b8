"""`python -m services.registry [migrate]`: the adapter registry server.

`migrate` upgrades the database to the newest schema and exits (serving does too).
"""

import sys

from services.common.db import sqlite_url
from services.common.migrations import migrate_main
from services.common.server import run
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from services.registry.store import SCHEMA


def main() -> None:
    settings = RegistrySettings()
    if sys.argv[1:] == ["migrate"]:
        root = settings.service_dir("registry")
        migrate_main(settings, SCHEMA, settings.database_url or sqlite_url(root / "registry.db"))
        return
    run(settings, RegistryApp)


if __name__ == "__main__":
    main()
