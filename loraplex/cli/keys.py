"""`loraplex keys`: create, list and revoke API keys in a keys file (hashes only).

These are admin commands on the keys file the services read (they pick up changes
within a second, no restart), so they need the services' kit installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from loraplex.cli.common import console, err_console, require_extras

app = typer.Typer(help="API keys (stored hashed in a keys file).", no_args_is_help=True)

KeysFileOption = Annotated[Path | None, typer.Option(help="default: $LORAPLEX_KEYS_FILE")]


def _keys_file(given: Path | None) -> Path:
    if given:
        return given
    explicit = os.environ.get("LORAPLEX_KEYS_FILE")
    return (
        Path(explicit)
        if explicit
        else Path(os.environ.get("LORAPLEX_DATA_DIR", ".loraplex")) / "keys.json"
    )


def _fail(message: str, code: int) -> typer.Exit:
    err_console.print(f"[red]error[/red] {message}")
    return typer.Exit(code)


@app.command()
def create(
    tenant: Annotated[str, typer.Option(help="tenant the key acts as")] = "",
    service: Annotated[str, typer.Option(help="service identity (acts for named tenants)")] = "",
    keys_file: KeysFileOption = None,
) -> None:
    """Create a key; it is printed once and only its sha256 is stored."""
    require_extras("keys create", "services")
    from services.common.auth import add_key_to_file
    from services.common.context import PrincipalKind
    from services.common.errors import InvalidArgument

    if bool(tenant) == bool(service):
        raise typer.BadParameter("give exactly one of --tenant or --service")
    kind = PrincipalKind.TENANT if tenant else PrincipalKind.SERVICE
    path = _keys_file(keys_file)
    try:
        key = add_key_to_file(path, kind, tenant or service)
    except InvalidArgument as error:
        raise _fail(error.message, 2) from None
    err_console.print(f"added a {kind.value} key for {tenant or service} to {path}")
    console.print(key)


@app.command("list")
def list_(keys_file: KeysFileOption = None) -> None:
    """List stored keys: id, kind, name and when each was created (never the keys)."""
    from services.common.auth import list_keys

    path = _keys_file(keys_file)
    try:
        keys = list_keys(path)
    except (ValueError, KeyError, TypeError) as error:
        raise _fail(f"keys file {path} is malformed: {error}", 1) from None
    table = Table("id", "kind", "name", "created")
    for key in keys:
        table.add_row(key.id, key.kind.value, key.name, key.created_at or "(unrecorded)")
    console.print(table)


@app.command()
def revoke(
    key_id: Annotated[list[str] | None, typer.Argument(help="key ids from `keys list`")] = None,
    tenant: Annotated[str, typer.Option(help="revoke every key of this tenant")] = "",
    service: Annotated[str, typer.Option(help="revoke every key of this service")] = "",
    key: Annotated[
        str,
        typer.Option(
            help="revoke this key (env LORAPLEX_REVOKE_KEY)", envvar="LORAPLEX_REVOKE_KEY"
        ),
    ] = "",
    keys_file: KeysFileOption = None,
) -> None:
    """Revoke keys; running services refuse them within a second."""
    from services.common.auth import revoke_keys
    from services.common.context import PrincipalKind
    from services.common.errors import InvalidArgument, NotFound

    if tenant and service:
        raise typer.BadParameter("give at most one of --tenant or --service")
    kind = PrincipalKind.TENANT if tenant else PrincipalKind.SERVICE if service else None
    path = _keys_file(keys_file)
    try:
        removed = revoke_keys(
            path, key_ids=key_id or (), kind=kind, name=tenant or service, key=key
        )
    except InvalidArgument as error:
        raise _fail(error.message, 2) from None
    except NotFound as error:
        raise _fail(error.message, 4) from None
    for entry in removed:
        err_console.print(f"revoked {entry.kind.value} key {entry.id} of {entry.name}")
