"""`loraplex docs …`: create, ls, ingest, search, rm, stats over the retrieval service."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from loraplex.cli.common import AddressOption, ApiKeyOption, console, err_console, reported_errors
from loraplex.client.retrieval import INDEX_KINDS, RetrievalClient
from loraplex.retrieval.v1 import retrieval_service_pb2 as pb

app = typer.Typer(help="Document collections for retrieval (RAG).", no_args_is_help=True)

SUFFIXES = {".txt", ".md", ".markdown", ".jsonl"}
KIND_NAMES = {v: k for k, v in INDEX_KINDS.items()}
WhereOption = Annotated[
    list[str],
    typer.Option("--where", help="key=value metadata filter; repeat a key for 'any of'"),
]


class BadInput(ValueError):
    """A local file the CLI cannot turn into documents."""


def _where(items: list[str]) -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--where takes key=value, got {item!r}")
        where.setdefault(key, []).append(value)
    return where


def _files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
            )
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise BadInput(f"{path}: only .txt, .md and .jsonl files can be ingested")
            yield path
        else:
            raise FileNotFoundError(f"{path} does not exist")


def _markdown_title(text: str, fallback: str) -> str:
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip() or fallback
    return fallback


def _jsonl(path: Path, extra: dict[str, str]) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInput(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise BadInput(f"{path}:{number}: each line needs a string 'text'")
            metadata = record.get("metadata") or {}
            if not isinstance(metadata, dict):
                raise BadInput(f"{path}:{number}: 'metadata' must be an object")
            yield {
                "id": str(record.get("id") or f"{path.as_posix()}:{number}"),
                "text": record["text"],
                "metadata": {**extra, **{str(k): str(v) for k, v in metadata.items()}},
                "uri": str(record.get("uri") or path.resolve().as_uri()),
                "title": str(record.get("title") or path.name),
            }


def documents(paths: list[Path], extra: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """Documents from txt/md files (one each, id = path) and jsonl files (one per line)."""
    extra = extra or {}
    for path in _files(paths):
        if path.suffix.lower() == ".jsonl":
            yield from _jsonl(path, extra)
            continue
        text = path.read_text(encoding="utf-8")
        is_md = path.suffix.lower() in {".md", ".markdown"}
        yield {
            "id": path.as_posix(),
            "text": text,
            "metadata": dict(extra),
            "uri": path.resolve().as_uri(),
            "title": _markdown_title(text, path.stem) if is_md else path.name,
        }


@app.command()
def create(
    name: str,
    index: Annotated[str, typer.Option(help="exact, or hnsw for large collections")] = "exact",
    model: Annotated[str, typer.Option(help="embedding model (server default if empty)")] = "",
    chunk_size: Annotated[int, typer.Option(help="tokens per chunk (0: default)")] = 0,
    overlap: Annotated[int, typer.Option(help="tokens shared by neighbours (0: default)")] = 0,
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Create a collection."""
    if index not in INDEX_KINDS:
        raise typer.BadParameter(f"--index must be one of {sorted(INDEX_KINDS)}")
    with reported_errors(), RetrievalClient(address, api_key) as client:
        made = client.create_collection(
            name,
            index_kind=index,
            embedding_model=model,
            chunk_size_tokens=chunk_size,
            chunk_overlap_tokens=overlap,
        )
    console.print(
        f"created [bold]{made.name}[/bold] ({KIND_NAMES[made.index_kind]},"
        f" {made.embedding_model} {made.dimension}-d, chunks of {made.chunk_size_tokens}"
        f" tokens, overlap {made.chunk_overlap_tokens})"
    )


@app.command("ls")
def list_collections(address: AddressOption = None, api_key: ApiKeyOption = None) -> None:
    """List your collections."""
    table = Table("name", "index", "model", "chunk size", "revision")
    with reported_errors(), RetrievalClient(address, api_key) as client:
        for c in client.list_collections():
            table.add_row(
                c.name,
                KIND_NAMES.get(c.index_kind, "?"),
                c.embedding_model,
                str(c.chunk_size_tokens),
                str(c.revision),
            )
    console.print(table)


@app.command()
def ingest(
    collection: str,
    paths: Annotated[list[Path], typer.Argument(help="files and folders: .txt, .md, .jsonl")],
    meta: Annotated[list[str], typer.Option("--meta", help="key=value added to every doc")] = [],  # noqa: B006
    batch_size: Annotated[int, typer.Option(help="documents per stream message")] = 32,
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Upsert documents from files and folders, with a progress bar."""
    extra = {k: v[-1] for k, v in _where(meta).items()}
    progress = Progress(
        TextColumn("[bold]embedding"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks, {task.fields[docs]} docs written"),
        TimeElapsedColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
    )
    task = progress.add_task("ingest", total=None, docs=0)

    def update(embedded: int, total: int, written: int) -> None:
        progress.update(task, completed=embedded, total=total, docs=written)

    try:
        with reported_errors(), progress, RetrievalClient(address, api_key) as client:
            final = client.upsert(collection, documents(paths, extra), batch_size, update)
    except BadInput as error:
        err_console.print(f"[red]error[/red] {error}")
        sys.exit(2)
    console.print(
        f"ingested {final.documents_written} documents ({final.chunks_total} chunks) into"
        f" {collection}, revision {final.revision}"
    )


@app.command()
def search(
    collection: str,
    query: str,
    top_k: Annotated[
        int, typer.Option("--top-k", "-k", help="chunks to return (0: the service's default)")
    ] = 0,
    where: WhereOption = [],  # noqa: B006
    hybrid: Annotated[bool, typer.Option(help="fuse BM25 with dense (RRF)")] = False,
    min_score: Annotated[float | None, typer.Option(help="drop weaker chunks")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per chunk")] = False,
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Top-k chunks for QUERY."""
    with reported_errors(), RetrievalClient(address, api_key) as client:
        found = client.search(
            collection,
            query,
            top_k=top_k,
            where=_where(where),
            min_score=min_score,
            hybrid=hybrid,
        )
    for rank, chunk in enumerate(found.chunks, start=1):
        if as_json:
            console.print_json(json.dumps(_chunk_json(chunk)))
            continue
        title = chunk.source.title or chunk.document_id
        console.print(
            f"[bold]{rank}. {title}[/bold] [dim]{chunk.document_id}#{chunk.chunk_index}"
            f" [{chunk.start_char}:{chunk.end_char}] score {chunk.score:.3f}[/dim]"
        )
        console.print(chunk.text.strip(), markup=False, highlight=False)


def _chunk_json(chunk: pb.ScoredChunk) -> dict[str, Any]:
    return {
        "document_id": chunk.document_id,
        "chunk_index": chunk.chunk_index,
        "score": chunk.score,
        "start_char": chunk.start_char,
        "end_char": chunk.end_char,
        "text": chunk.text,
        "metadata": dict(chunk.metadata),
        "source": {"uri": chunk.source.uri, "title": chunk.source.title},
    }


@app.command()
def rm(
    collection: str,
    ids: Annotated[list[str] | None, typer.Argument(help="document ids to delete")] = None,
    where: WhereOption = [],  # noqa: B006
    whole: Annotated[bool, typer.Option("--collection", help="delete the collection")] = False,
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Delete documents by id or --where filter, or the whole collection with --collection."""
    if whole == bool(ids or where) or (ids and where):
        raise typer.BadParameter("give document ids, or --where filters, or --collection")
    with reported_errors(), RetrievalClient(address, api_key) as client:
        if whole:
            client.delete_collection(collection)
            console.print(f"deleted collection {collection}")
            return
        done = client.delete_documents(collection, ids or (), _where(where) or None)
    console.print(f"deleted {done.documents_deleted} documents, revision {done.revision}")


@app.command()
def stats(collection: str, address: AddressOption = None, api_key: ApiKeyOption = None) -> None:
    """Documents, chunks, bytes and tombstones of a collection."""
    with reported_errors(), RetrievalClient(address, api_key) as client:
        numbers = client.stats(collection)
    console.print_json(
        json.dumps(
            {
                "documents": numbers.documents,
                "chunks": numbers.chunks,
                "index_kind": KIND_NAMES.get(numbers.index_kind, "?"),
                "bytes_on_disk": numbers.bytes_on_disk,
                "tombstones": numbers.tombstones,
                "revision": numbers.revision,
            }
        )
    )
