"""`loraplex models import/list/verify`: the managed base-model store (local, no server)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from loraplex.cli.common import console, err_console, require_extras

app = typer.Typer(help="Base models in the local model store.", no_args_is_help=True)


def _store(data_dir: Path | None):  # type: ignore[no-untyped-def]
    require_extras("models", "services")
    from services.models.store import ModelStore

    root = data_dir or Path(os.environ.get("LORAPLEX_DATA_DIR", ".loraplex"))
    return ModelStore(root / "models")


DataDirOption = Annotated[
    Path | None, typer.Option(help="data root (default: $LORAPLEX_DATA_DIR or ./.loraplex)")
]


@app.command("import")
def import_model(
    source: Annotated[
        Path | None, typer.Argument(help=".gguf file or HF folder (default: packaged SmolLM2)")
    ] = None,
    name: Annotated[str, typer.Option(help="name in the store")] = "smollm2-135m-instruct",
    replace: Annotated[bool, typer.Option(help="re-import over an existing model")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Import a base model once; services then load it by name, offline."""
    require_extras("models import", "services", "ml")
    from services.common.errors import LoraplexError

    store = _store(data_dir)
    try:
        with console.status(f"importing {name} (GGUF is dequantized to fp32: ~1 min)"):
            record = store.import_model(source, name, replace)
    except LoraplexError as error:
        err_console.print(f"[red]error[/red] {error.message}")
        raise typer.Exit(5 if "already" in error.message else 2) from None
    console.print(
        f"imported {record.name}: {record.size_bytes / 1e6:.0f} MB, sha256 {record.sha256}"
    )


@app.command("list")
def list_models(data_dir: DataDirOption = None) -> None:
    """Models in the store."""
    table = Table("name", "size MB", "sha256", "source")
    for record in _store(data_dir).list():
        table.add_row(
            record.name, f"{record.size_bytes / 1e6:.0f}", record.sha256[:16], record.source
        )
    console.print(table)


@app.command()
def verify(name: str, data_dir: DataDirOption = None) -> None:
    """Re-hash a model's files against its manifest."""
    bad = _store(data_dir).verify(name)
    if bad:
        err_console.print(f"[red]corrupt[/red] {', '.join(bad)}")
        raise typer.Exit(1)
    console.print(f"{name}: every file matches its checksum")
