"""`loraplex keys create`: add a tenant or service API key to a keys file (hash only)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from loraplex.cli.common import console, err_console, require_extras

app = typer.Typer(help="API keys (stored hashed in a keys file).", no_args_is_help=True)


def _default_keys_file() -> Path:
    explicit = os.environ.get("LORAPLEX_KEYS_FILE")
    return (
        Path(explicit)
        if explicit
        else Path(os.environ.get("LORAPLEX_DATA_DIR", ".loraplex")) / "keys.json"
    )


@app.command()
def create(
    tenant: Annotated[str, typer.Option(help="tenant the key acts as")] = "",
    service: Annotated[str, typer.Option(help="service identity (acts for named tenants)")] = "",
    keys_file: Annotated[Path | None, typer.Option(help="default: $LORAPLEX_KEYS_FILE")] = None,
) -> None:
    """Create a key; it is printed once and only its sha256 is stored."""
    require_extras("keys create", "services")
    from services.common.auth import add_key_to_file
    from services.common.context import PrincipalKind
    from services.common.errors import InvalidArgument

    if bool(tenant) == bool(service):
        raise typer.BadParameter("give exactly one of --tenant or --service")
    kind = PrincipalKind.TENANT if tenant else PrincipalKind.SERVICE
    path = keys_file or _default_keys_file()
    try:
        key = add_key_to_file(path, kind, tenant or service)
    except InvalidArgument as error:
        err_console.print(f"[red]error[/red] {error.message}")
        raise typer.Exit(2) from None
    err_console.print(f"added a {kind.value} key for {tenant or service} to {path}")
    console.print(key)
