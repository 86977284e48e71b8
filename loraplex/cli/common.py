"""What every sub-command shares: connection options, error → exit code, progress bars."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from typing import Annotated

import grpc
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from loraplex.client.base import LoraplexClientError

console = Console()
err_console = Console(stderr=True)

#: Exit codes scripts can rely on, by gRPC status.
EXIT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: 2,
    grpc.StatusCode.UNAUTHENTICATED: 3,
    grpc.StatusCode.PERMISSION_DENIED: 3,
    grpc.StatusCode.NOT_FOUND: 4,
    grpc.StatusCode.ALREADY_EXISTS: 5,
    grpc.StatusCode.FAILED_PRECONDITION: 5,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 6,
    grpc.StatusCode.UNAVAILABLE: 7,
    grpc.StatusCode.DEADLINE_EXCEEDED: 7,
}

AddressOption = Annotated[
    str | None,
    typer.Option("--address", help="host:port of the service (default: LORAPLEX_<SVC>_ADDR)"),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", envvar="LORAPLEX_API_KEY", help="tenant API key", show_default=False),
]


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Prints a failed call's status and message and exits with its code."""
    try:
        yield
    except LoraplexClientError as error:
        err_console.print(f"[red]error[/red] {error.code.name}: {error.message}")
        sys.exit(EXIT_CODES.get(error.code, 1))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
        err_console.print(f"[red]error[/red] {error}")
        sys.exit(2)


#: What each optional extra brings, by a module it installs (checked, never imported).
EXTRA_MODULES = {
    "services": ("pydantic_settings", "sqlalchemy", "grpc_health", "prometheus_client"),
    "ml": ("torch", "transformers", "faiss", "sentence_transformers"),
    "serve-cpu": ("vllm",),
}


def require_extras(command: str, *extras: str) -> None:
    """Admin commands run the services' own code here: without its extras, say which to install.

    The SDK and the other commands need only the generated stubs; `keys`, `models`
    and `suite` import the services lazily, after this check.
    """
    missing = [
        extra
        for extra in extras
        if any(importlib.util.find_spec(module) is None for module in EXTRA_MODULES[extra])
    ]
    if missing:
        names = ",".join(missing)
        err_console.print(
            f"[red]error[/red] `loraplex {command}` runs the services' own code on this machine"
            f" and needs the {names} extra(s): " + escape(f"pip install 'loraplex[{names}]'")
        )
        sys.exit(1)


@contextlib.contextmanager
def transfer_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A byte progress bar; yields the (done, total) callback clients take."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
        disable=not err_console.is_terminal,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
