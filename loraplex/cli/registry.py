"""`loraplex registry …`: push, list, show, versions, alias, pull, rm, watch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from loraplex.cli.common import (
    AddressOption,
    ApiKeyOption,
    console,
    reported_errors,
    transfer_bar,
)
from loraplex.client.registry import RegistryClient
from loraplex.registry.v1 import registry_service_pb2 as pb

app = typer.Typer(help="Versioned LoRA adapters per tenant.", no_args_is_help=True)

KIND_NAMES = {
    pb.ADAPTER_EVENT_KIND_VERSION_PUSHED: "pushed",
    pb.ADAPTER_EVENT_KIND_VERSION_DELETED: "deleted",
    pb.ADAPTER_EVENT_KIND_ALIAS_SET: "alias-set",
    pb.ADAPTER_EVENT_KIND_ALIAS_DELETED: "alias-deleted",
}


def _client(address: str | None, api_key: str | None) -> RegistryClient:
    return RegistryClient(address, api_key)


def _pairs(items: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} entries look like key=value, got {item!r}")
        pairs[key] = value
    return pairs


def _describe(version: pb.AdapterVersion) -> dict:
    return {
        "ref": f"{version.name}@{version.version}",
        "digest": version.digest,
        "size_bytes": version.size_bytes,
        "peft_type": version.peft.peft_type,
        "base_model": version.peft.base_model,
        "rank": version.peft.rank,
        "alpha": version.peft.alpha,
        "target_modules": list(version.peft.target_modules),
        "aliases": list(version.aliases),
        "lineage": dict(version.lineage),
        "metrics": dict(version.metrics),
        "files": [
            {"path": f.path, "size": f.size_bytes, "sha256": f.sha256} for f in version.files
        ],
        "created_at": version.created_at.ToJsonString(),
        "description": version.description,
    }


@app.command()
def push(
    name: Annotated[str, typer.Argument(help="tenant/name")],
    source: Annotated[Path, typer.Argument(help="PEFT adapter folder, or a .tar/.tar.gz of one")],
    alias: Annotated[list[str], typer.Option("--alias", help="alias to point here")] = [],  # noqa: B006
    lineage: Annotated[list[str], typer.Option(help="key=value provenance")] = [],  # noqa: B006
    metric: Annotated[list[str], typer.Option(help="key=number score")] = [],  # noqa: B006
    description: str = "",
    expect_base_model: Annotated[str, typer.Option(help="refuse unless the base matches")] = "",
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Upload an adapter as the next version of NAME."""
    try:
        metrics = {k: float(v) for k, v in _pairs(metric, "--metric").items()}
    except ValueError:
        raise typer.BadParameter("--metric values must be numbers") from None
    with reported_errors(), _client(address, api_key) as client, transfer_bar("push") as bar:
        version = client.push(
            name, source, lineage=_pairs(lineage, "--lineage"), metrics=metrics,
            aliases=alias, description=description, expect_base_model=expect_base_model,
            progress=bar,
        )  # fmt: skip
    console.print(
        f"pushed [bold]{version.name}@{version.version}[/bold] ({version.size_bytes} bytes)"
    )


@app.command("list")
def list_adapters(
    base_model: Annotated[str, typer.Option(help="only adapters of this base model")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """List your adapters with their newest version."""
    with reported_errors(), _client(address, api_key) as client:
        adapters = list(client.list(base_model=base_model))
    if as_json:
        console.print_json(
            data=[{**_describe(a.latest), "versions": a.version_count} for a in adapters]
        )
        return
    table = Table("name", "latest", "versions", "aliases", "type", "rank", "base model")
    for summary in adapters:
        aliases = ", ".join(f"{k}→{v}" for k, v in sorted(summary.aliases.items()))
        peft = summary.latest.peft
        table.add_row(
            summary.name, str(summary.latest.version), str(summary.version_count), aliases,
            peft.peft_type, str(peft.rank), peft.base_model,
        )  # fmt: skip
    console.print(table)


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="tenant/name[@version|@alias]")],
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Show one version: config, files, lineage and metrics."""
    with reported_errors(), _client(address, api_key) as client:
        version = client.get(ref)
    console.print_json(json.dumps(_describe(version)))


@app.command()
def versions(
    name: Annotated[str, typer.Argument(help="tenant/name")],
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """List every version of an adapter, newest first."""
    with reported_errors(), _client(address, api_key) as client:
        items = list(client.list_versions(name))
    table = Table("version", "aliases", "size", "created", "metrics")
    for v in items:
        metrics = ", ".join(f"{k}={val:.4g}" for k, val in sorted(v.metrics.items()))
        table.add_row(
            str(v.version), ", ".join(v.aliases), str(v.size_bytes),
            v.created_at.ToJsonString(), metrics,
        )  # fmt: skip
    console.print(table)


@app.command()
def alias(
    name: Annotated[str, typer.Argument(help="tenant/name")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS")],
    version: Annotated[int, typer.Argument()],
    stage_seconds: Annotated[
        int, typer.Option(help="announce now, take effect later (replicas pre-load)")
    ] = 0,
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Point ALIAS of NAME at VERSION."""
    with reported_errors(), _client(address, api_key) as client:
        state = client.set_alias(name, alias_name, version, stage_seconds)
    target = state.staged_version or state.version
    when = f" at {state.effective_at.ToJsonString()}" if state.staged_version else ""
    console.print(f"{state.name}@{state.alias} → {target}{when}")


@app.command()
def unalias(
    name: Annotated[str, typer.Argument(help="tenant/name")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS")],
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Remove an alias (versions stay)."""
    with reported_errors(), _client(address, api_key) as client:
        client.delete_alias(name, alias_name)
    console.print(f"removed alias {alias_name} of {name}")


@app.command()
def pull(
    ref: Annotated[str, typer.Argument(help="tenant/name[@version|@alias]")],
    dest: Annotated[Path, typer.Argument(help="folder to write the adapter into")],
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Download a version, verifying every file's sha256."""
    with reported_errors(), _client(address, api_key) as client, transfer_bar("pull") as bar:
        version = client.pull(ref, dest, progress=bar)
    console.print(f"pulled {version.name}@{version.version} into {dest}")


@app.command()
def rm(
    ref: Annotated[str, typer.Argument(help="tenant/name (every version) or tenant/name@N")],
    force: Annotated[bool, typer.Option(help="also delete versions aliases point to")] = False,
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Delete a version, or a whole adapter."""
    name, _, selector = ref.partition("@")
    if selector and not selector.isdigit():
        raise typer.BadParameter("rm takes a version number, not an alias")
    with reported_errors(), _client(address, api_key) as client:
        deleted = client.delete(name, int(selector or 0), force)
    console.print(f"deleted {name} versions {', '.join(map(str, deleted))}")


@app.command()
def watch(
    name: Annotated[str, typer.Argument(help="tenant/name, or empty for all")] = "",
    include_current: bool = True,
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Follow pushes, deletes and alias moves as they happen."""
    with reported_errors(), _client(address, api_key) as client:
        for event in client.watch(name, include_current=include_current):
            alias_text = f" {event.alias}" if event.alias else ""
            console.print(
                f"#{event.sequence} {KIND_NAMES.get(event.kind, '?')}{alias_text}"
                f" {event.name}@{event.version} (effective {event.effective_at.ToJsonString()})"
            )
