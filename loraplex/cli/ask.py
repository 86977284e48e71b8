"""`loraplex ask`: stream an answer from the inference service, with its cited sources."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from loraplex.cli.common import AddressOption, ApiKeyOption, console, reported_errors
from loraplex.client.inference import ABSTAIN_POLICIES, InferenceClient
from loraplex.inference.v1 import inference_service_pb2 as pb


def _filters(items: list[str]) -> dict[str, str | list[str]]:
    filters: dict[str, str | list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--filter looks like key=value or key=a|b, got {item!r}")
        filters[key] = value.split("|") if "|" in value else value
    return filters


def ask(
    question: Annotated[str, typer.Argument(help="what to ask")],
    adapter: Annotated[str, typer.Option(help="tenant/name[@version|@alias]")] = "",
    collection: Annotated[str, typer.Option(help="your collection to ground the answer in")] = "",
    top_k: Annotated[int, typer.Option(help="chunks to retrieve (0: the service's default)")] = 0,
    hybrid: Annotated[bool, typer.Option(help="fuse BM25 with dense search")] = False,
    filter_: Annotated[
        list[str], typer.Option("--filter", help="metadata key=value (or key=a|b)")
    ] = [],  # noqa: B006
    max_tokens: Annotated[int, typer.Option()] = 256,
    temperature: Annotated[float, typer.Option()] = 0.0,
    system: Annotated[str, typer.Option(help="system message")] = "",
    abstain: Annotated[
        str,
        typer.Option(
            help="below the grounded threshold: quote (the better of the answer and the most"
            " relevant passage sentence), refuse, or off (docs/grounding.md)"
        ),
    ] = "quote",
    threshold: Annotated[
        float | None,
        typer.Option(help="grounding score (0-1) to flag grounded; default: the tenant's"),
    ] = None,
    abstain_threshold: Annotated[
        float | None,
        typer.Option(help="score (0-1) below which refuse/quote serve nothing; default 0.25"),
    ] = None,
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Ask a question; the answer streams, then the sources it was given and cites."""
    if abstain not in ABSTAIN_POLICIES:
        raise typer.BadParameter(f"--abstain is one of {', '.join(ABSTAIN_POLICIES)}")
    messages = [("system", system)] if system else []
    messages.append(("user", question))
    result = None
    with reported_errors(), InferenceClient(address, api_key) as client:
        for item in client.stream(
            messages=messages, adapter=adapter, collection=collection, top_k=top_k,
            hybrid=hybrid, filters=_filters(filter_), max_tokens=max_tokens,
            temperature=temperature, abstain=abstain, grounded_threshold=threshold,
            abstain_threshold=abstain_threshold,
        ):  # fmt: skip
            if isinstance(item, str):
                console.print(item, end="", markup=False, highlight=False)
            else:
                result = item
    console.print()
    if result is None:
        return
    served_by = result.adapter_ref or "base model"
    console.print(
        f"[dim]{served_by} · {result.usage.completion_tokens} tokens · "
        f"{result.total_ms / 1000:.1f}s · first token {result.time_to_first_token_ms:.0f} ms[/dim]"
    )
    if not result.collection:
        return
    if result.text != result.generated_text:
        console.print("[bold]checked answer:[/bold] ", end="")
        console.print(result.text, markup=False, highlight=False)
    console.print(_verdict(result))
    if result.citations:
        table = Table(
            "#", "cited", "support", "source", "document", "chars", "score", title="sources"
        )
        for c in result.citations:
            cited = "✔ added" if c.added else "✔" if c.cited else "✘ dropped" if c.dropped else ""
            table.add_row(
                str(c.number), cited, f"{c.support:.2f}{' ✔' if c.supported else ''}",
                c.source.title or c.source.uri, c.document_id, f"{c.start_char}-{c.end_char}",
                f"{c.score:.3f}",
            )  # fmt: skip
        console.print(table)


def _verdict(result: pb.GenerationResult) -> str:
    score = f"score {result.grounding_score:.2f}, threshold {result.grounded_threshold:.2f}"
    if result.refusal_reason:
        reason = pb.RefusalReason.Name(result.refusal_reason).removeprefix("REFUSAL_REASON_")
        return f"[yellow]refusal: {reason.lower().replace('_', ' ')}[/yellow] ({score})"
    if result.quoted:
        return (
            f"[yellow]quoted the most relevant passage sentence[/yellow] ({score}; the"
            f" model's answer scored {result.checked_score:.2f})"
        )
    if result.grounded:
        return f"[green]grounded: cited, supported and answering the question[/green] ({score})"
    return (
        f"[red]not grounded[/red] ({score}): a claim lacks a supporting citation or does"
        " not answer the question"
    )
