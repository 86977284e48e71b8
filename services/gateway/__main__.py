"""`python -m services.gateway`: settings from the environment, then serve."""

from __future__ import annotations

from services.common.server import run
from services.gateway.app import GatewayApp
from services.gateway.settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    run(settings, lambda _: GatewayApp(settings))


if __name__ == "__main__":
    main()
