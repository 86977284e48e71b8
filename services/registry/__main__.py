"""`python -m services.registry`: the adapter registry server."""

from services.common.server import run
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings


def main() -> None:
    run(RegistrySettings(), RegistryApp)


if __name__ == "__main__":
    main()
