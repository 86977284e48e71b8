"""`loraplex suite up`: the four services as local processes, one each or N replicas each,
and the OpenAI-shaped HTTP gateway: one address for every OpenAI route."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from loraplex.cli.common import console, err_console, require_extras

if TYPE_CHECKING:
    from services.suite import LocalSuite

app = typer.Typer(help="Run the whole suite on this machine.", no_args_is_help=True)


@app.command()
def up(
    data_dir: Annotated[
        Path | None, typer.Option(help="data root (default: $LORAPLEX_DATA_DIR or ./.loraplex)")
    ] = None,
    service: Annotated[
        list[str],
        typer.Option(help="start only these (repeatable; default: all four and the gateway)"),
    ] = [],  # noqa: B006
    replicas: Annotated[
        int,
        typer.Option(
            min=0,
            help="N processes of every service on PostgreSQL and an S3-compatible object store "
            "(moto's emulator), both started here and throwaway; 0: one process each on "
            "SQLite and local files",
        ),
    ] = 0,
    free_ports: Annotated[
        bool, typer.Option(help="free ports instead of the defaults (50051-50054, +100 a replica)")
    ] = False,
) -> None:
    """Start registry, retrieval, training, inference and the OpenAI gateway; stop them all
    on Ctrl-C."""
    wanted = set(service) or {"registry", "retrieval", "training", "inference", "gateway"}
    extras = ["services"]
    extras += ["ml"] if wanted & {"retrieval", "training"} else []
    extras += ["serve-cpu"] if "inference" in wanted else []
    require_extras("suite up", *extras)
    from services.suite import GATEWAY, SERVICES, LocalSuite

    root = data_dir or Path(os.environ.get("LORAPLEX_DATA_DIR", ".loraplex"))
    unknown = set(service) - {*SERVICES, GATEWAY}
    if unknown:
        raise typer.BadParameter(f"unknown service(s): {', '.join(sorted(unknown))}")
    names = tuple(s for s in (*SERVICES, GATEWAY) if s in wanted)
    suite = LocalSuite(root, free_ports=free_ports, replicas=replicas)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with suite:
        try:
            if replicas:
                _start_replicated(suite, names)
            else:
                _start_embedded(suite, names)
        except RuntimeError as error:  # a service or a backend did not start: say which
            err_console.print(f"[red]error[/red] {error}")
            raise typer.Exit(7) from None
        if GATEWAY in names:
            console.print(
                f"OpenAI-compatible API (every route, one address): {suite.openai_base_url()}"
            )
        console.print(
            f"logs in {suite.data_dir / 'logs'}; set LORAPLEX_DATA_DIR={suite.data_dir} for"
            " `loraplex keys create`; Ctrl-C stops the suite"
        )
        # Ctrl-C stops the suite even where SIGINT was inherited as ignored (a job started
        # in the background of a non-interactive shell), where Python raises nothing.
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        stop.wait()


def _start_embedded(suite: LocalSuite, names: tuple[str, ...]) -> None:
    for name in names:
        with console.status(f"starting {name} (inference loads the model: ~1 min)"):
            suite.start(name)
        where = suite.http_url(name) if name == "gateway" else suite.address(name)
        console.print(f"{name} ready on {where}")


def _start_replicated(suite: LocalSuite, names: tuple[str, ...]) -> None:
    """Backends, then every replica launched at once, each ticked off as it turns ready."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("PostgreSQL and the S3 emulator (moto)", total=1)
        suite.start_backends()
        progress.update(task, completed=1)
        tasks = {}
        for name in names:
            suite.launch(name)
            for i in range(len(suite.ports[name])):
                label = f"{suite.process_name(name, i)} on {suite.replica_address(name, i)}"
                hint = " (loads the model: minutes)" if name == "inference" else ""
                tasks[name, i] = progress.add_task(f"{label}{hint}", total=1)
        for (name, i), task in tasks.items():
            suite.wait_ready(name, timeout=1800, replica=i)
            label = f"{suite.process_name(name, i)} ready on {suite.replica_address(name, i)}"
            progress.update(task, completed=1, description=label)
    console.print(_addresses(suite, names))
    assert suite.postgres is not None and suite.object_store is not None
    console.print(
        f"PostgreSQL on 127.0.0.1:{suite.postgres.port} (databases: registry, retrieval, "
        f"training); S3 endpoint {suite.object_store.endpoint}, bucket "
        f"{suite.object_store.bucket}: moto's standalone server, an in-memory S3 emulator for "
        "trying replicas on one machine, not a store for real data. Both start empty each time."
    )
    console.print("For the CLI and the SDK in another shell:")
    for name in names:
        if name != "gateway":
            console.print(f"  export LORAPLEX_{name.upper()}_ADDR={suite.address(name)}")
    console.print(f"  export LORAPLEX_KEYS_FILE={suite.env['LORAPLEX_KEYS_FILE']}")


def _addresses(suite: LocalSuite, names: tuple[str, ...]) -> Table:
    table = Table(title=f"{suite.replicas} replicas of every service")
    for column in ("service", "target (every replica)", "replica", "gRPC", "metrics"):
        table.add_column(column)
    for name in names:
        for i in range(len(suite.ports[name])):
            table.add_row(
                name if i == 0 else "",
                suite.address(name) if i == 0 else "",
                str(i),
                suite.replica_address(name, i),
                suite.metrics_url(name, i),
            )
    return table
