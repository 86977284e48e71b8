"""`loraplex suite up`: the four services as local processes on the default ports."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from loraplex.cli.common import console, err_console, require_extras

app = typer.Typer(help="Run the whole suite on this machine.", no_args_is_help=True)


@app.command()
def up(
    data_dir: Annotated[
        Path | None, typer.Option(help="data root (default: $LORAPLEX_DATA_DIR or ./.loraplex)")
    ] = None,
    service: Annotated[
        list[str], typer.Option(help="start only these (repeatable; default: all four)")
    ] = [],  # noqa: B006
) -> None:
    """Start registry, retrieval, training and inference; stop them all on Ctrl-C."""
    wanted = set(service) or {"registry", "retrieval", "training", "inference"}
    extras = ["services"]
    extras += ["ml"] if wanted & {"retrieval", "training"} else []
    extras += ["serve-cpu"] if "inference" in wanted else []
    require_extras("suite up", *extras)
    from services.suite import SERVICES, LocalSuite

    root = data_dir or Path(os.environ.get("LORAPLEX_DATA_DIR", ".loraplex"))
    unknown = set(service) - set(SERVICES)
    if unknown:
        raise typer.BadParameter(f"unknown service(s): {', '.join(sorted(unknown))}")
    suite = LocalSuite(root, free_ports=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with suite:
        for name in service or SERVICES:
            with console.status(f"starting {name} (inference loads the model: ~1 min)"):
                try:
                    suite.start(name)
                except RuntimeError as error:
                    err_console.print(f"[red]error[/red] {error}")
                    raise typer.Exit(7) from None
            console.print(f"{name} ready on {suite.address(name)}")
        console.print(
            f"logs in {suite.data_dir / 'logs'}; set LORAPLEX_DATA_DIR={suite.data_dir} for"
            " `loraplex keys create`; Ctrl-C stops the suite"
        )
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
