"""`loraplex train ...` and `loraplex data push`: datasets, jobs, live logs, loss plots."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from loraplex.cli.common import (
    AddressOption,
    ApiKeyOption,
    console,
    err_console,
    reported_errors,
    transfer_bar,
)
from loraplex.client.training import METHODS, TASKS, TrainingClient

app = typer.Typer(help="Fine-tuning jobs.", no_args_is_help=True)
data_app = typer.Typer(help="Training datasets.", no_args_is_help=True)


def _client(address: str | None, api_key: str | None) -> TrainingClient:
    return TrainingClient(address, api_key)


def _state(job) -> str:  # type: ignore[no-untyped-def]
    return (
        type(job)
        .DESCRIPTOR.fields_by_name["state"]
        .enum_type.values_by_number[job.state]
        .name.removeprefix("JOB_STATE_")
        .lower()
    )


@data_app.command("push")
def data_push(
    path: Path,
    name: Annotated[str, typer.Option(help="dataset name (default: file name)")] = "",
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Upload a JSONL dataset; every row is validated before it is stored."""
    with reported_errors(), _client(address, api_key) as client, transfer_bar(path.name) as bar:
        dataset = client.upload_dataset(path, name, progress=bar)
    console.print(f"{dataset.id}  {dataset.name}  {dataset.rows} rows  sha256 {dataset.sha256}")


@app.command()
def start(
    base_model: str,
    dataset: Annotated[list[str], typer.Option("--dataset", "-d", help="id or id:weight")],
    method: Annotated[str, typer.Option(help=", ".join(METHODS))] = "lora",
    task: Annotated[str, typer.Option(help=", ".join(TASKS))] = "instruction",
    validation: str = "",
    test: str = "",
    learning_rate: float = 0.0,
    epochs: float = 0.0,
    max_steps: int = 0,
    batch_size: int = 0,
    gradient_accumulation: Annotated[
        int | None, typer.Option(help="micro-batches per optimizer step (default 1)")
    ] = None,
    max_seq_length: Annotated[int, typer.Option(help="tokens per sequence (0: 512)")] = 0,
    seed: int = 0,
    rank: int = 0,
    alpha: Annotated[float, typer.Option(help="LoRA alpha (0: 2 x rank)")] = 0.0,
    target_module: Annotated[
        list[str], typer.Option(help="LoRA target module, repeatable (default: attention)")
    ] = [],  # noqa: B006
    lora_last_layers: Annotated[
        int, typer.Option(help="adapt only the last N layers (0: all); faster to train")
    ] = 0,
    eval_interval: Annotated[
        int, typer.Option(help="validation every N steps (0: four times per run)")
    ] = 0,
    checkpoint_interval: Annotated[
        int, typer.Option(help="checkpoint every N steps (0: four times per run)")
    ] = 0,
    test_ratio: Annotated[float, typer.Option(help="held-out share when no --test")] = 0.0,
    validation_ratio: Annotated[float, typer.Option(help="share when no --validation")] = 0.0,
    publish: Annotated[str, typer.Option(help="adapter name 'tenant/name'")] = "",
    promote_alias: str = "",
    promote_if: Annotated[str, typer.Option(help="e.g. 'test_exact_match>=0.8'")] = "",
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Start a fine-tuning job; prints its id."""
    weights = {}
    for item in dataset:
        dataset_id, _, weight = item.partition(":")
        weights[dataset_id] = float(weight or 1.0)
    hp = {
        "learning_rate": learning_rate,
        "epochs": epochs,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "max_seq_length": max_seq_length,
        "seed": seed,
        "eval_interval_steps": eval_interval,
        "checkpoint_interval_steps": checkpoint_interval,
    }
    if gradient_accumulation is not None:  # an explicit 0 reaches the server and is refused
        hp["gradient_accumulation_steps"] = gradient_accumulation
    lora = None
    if rank or alpha or target_module or lora_last_layers:
        lora = {
            "rank": rank,
            "alpha": alpha,
            "dropout": 0.05,
            "target_modules": target_module,
            "last_layers": lora_last_layers,
        }
    with reported_errors(), _client(address, api_key) as client:
        job = client.create_job(
            base_model,
            weights,
            method=method,
            task=task,
            validation=validation,
            test=test,
            hyperparameters=hp,
            lora=lora,
            validation_ratio=validation_ratio,
            test_ratio=test_ratio,
            adapter_name=publish,
            promote_alias=promote_alias,
            promote_if=promote_if,
        )
    console.print(f"{job.id}  queued (position {job.queue_position})")


@app.command()
def status(job_id: str, address: AddressOption = None, api_key: ApiKeyOption = None) -> None:
    """Show a job's state, progress and metrics."""
    with reported_errors(), _client(address, api_key) as client:
        job = client.get_job(job_id)
    console.print(f"{job.id}  {_state(job)}  step {job.step}/{job.total_steps}")
    if job.failure_reason:
        console.print(f"[red]{job.failure_reason}[/red]")
    if job.adapter_ref:
        console.print(f"published {job.adapter_ref}")
    for key in sorted(job.metrics):
        console.print(f"  {key:28} {job.metrics[key]:.4g}")


@app.command("list")
def list_jobs(address: AddressOption = None, api_key: ApiKeyOption = None) -> None:
    """List your jobs, newest first."""
    table = Table("id", "state", "method", "base model", "step", "adapter")
    with reported_errors(), _client(address, api_key) as client:
        for job in client.list_jobs():
            method = job.spec.DESCRIPTOR.fields_by_name["method"].enum_type
            table.add_row(
                job.id,
                _state(job),
                method.values_by_number[job.spec.method].name.removeprefix("METHOD_").lower(),
                job.spec.base_model,
                f"{job.step}/{job.total_steps}",
                job.adapter_ref,
            )
    console.print(table)


@app.command()
def cancel(job_id: str, address: AddressOption = None, api_key: ApiKeyOption = None) -> None:
    """Cancel a queued or running job."""
    with reported_errors(), _client(address, api_key) as client:
        job = client.cancel_job(job_id)
    console.print(f"{job.id}  {_state(job)}")


def describe(event) -> str:  # type: ignore[no-untyped-def]
    kind = event.WhichOneof("event")
    body = getattr(event, kind)
    if kind == "queued":
        return f"queued at position {body.position}"
    if kind == "started":
        resumed = f", resumed from step {body.resumed_from_step}" if body.resumed_from_step else ""
        return f"started: {body.total_steps} steps{resumed}"
    if kind == "step":
        return (
            f"step {body.step}/{body.total_steps} loss {body.loss:.4f} lr {body.learning_rate:.2e}"
        )
    if kind == "evaluation":
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(body.metrics.items()))
        return f"evaluation ({body.split}) at step {body.step}: {metrics}"
    if kind == "checkpoint":
        return f"checkpoint at step {body.step}"
    if kind == "published":
        extra = f", alias {body.promoted_alias}" if body.promoted_alias else ""
        skipped = f" (alias not moved: {body.promotion_skipped_reason})"
        return f"published {body.adapter_ref}{extra}" + (
            skipped if body.promotion_skipped_reason else ""
        )
    if kind == "failed":
        return f"[red]failed: {body.reason}[/red]"
    if kind == "notice":
        return f"note: {body.message}"
    return kind


@app.command()
def logs(
    job_id: str,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="live progress until it ends")
    ] = False,
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Print a job's events; with -f, a live progress bar with the loss."""
    with reported_errors(), _client(address, api_key) as client:
        if not follow:
            for event in client.events(job_id, follow=False):
                console.print(f"{event.sequence:>5} {describe(event)}")
            return
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps  loss {task.fields[loss]}"),
            TimeRemainingColumn(),
            console=err_console,
        ) as bar:
            task = bar.add_task(job_id, total=None, loss="-")
            for event in client.events(job_id, follow=True):
                kind = event.WhichOneof("event")
                if kind == "step":
                    bar.update(
                        task,
                        completed=event.step.step,
                        total=event.step.total_steps,
                        loss=f"{event.step.loss:.4f}",
                    )
                else:
                    bar.console.print(describe(event))


def loss_series(events) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:  # type: ignore[no-untyped-def]
    train, validation = [], []
    for event in events:
        kind = event.WhichOneof("event")
        if kind == "step":
            train.append((float(event.step.step), event.step.loss))
        elif kind == "evaluation" and event.evaluation.split == "validation":
            loss = event.evaluation.metrics.get("validation_loss")
            if loss is not None:
                validation.append((float(event.evaluation.step), loss))
    return train, validation


def draw_png(train, validation, out: Path, title: str) -> None:  # type: ignore[no-untyped-def]
    """matplotlib when installed, else a plain PIL chart."""
    if importlib.util.find_spec("matplotlib") is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5))
        ax.plot(*zip(*train, strict=True), label="train")
        if validation:
            ax.plot(*zip(*validation, strict=True), "o-", label="validation")
        ax.set(xlabel="step", ylabel="loss", title=title)
        ax.legend()
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return
    from PIL import Image, ImageDraw

    width, height, pad = 800, 450, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    points = train + validation
    x_max = max(x for x, _ in points) or 1.0
    y_min, y_max = min(y for _, y in points), max(y for _, y in points)
    span = (y_max - y_min) or 1.0

    def xy(x: float, y: float) -> tuple[float, float]:
        return (
            pad + (width - 2 * pad) * x / x_max,
            height - pad - (height - 2 * pad) * (y - y_min) / span,
        )

    draw.rectangle([pad, pad, width - pad, height - pad], outline="black")
    draw.text((pad, 15), f"{title}  (loss {y_min:.3g}..{y_max:.3g}, steps 0..{x_max:g})", "black")
    if len(train) > 1:
        draw.line([xy(x, y) for x, y in train], fill=(31, 119, 180), width=2)
    for x, y in validation:
        cx, cy = xy(x, y)
        draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=(255, 127, 14))
    if len(validation) > 1:
        draw.line([xy(x, y) for x, y in validation], fill=(255, 127, 14), width=2)
    draw.text((width - pad - 170, pad + 8), "train", (31, 119, 180))
    draw.text((width - pad - 100, pad + 8), "validation", (255, 127, 14))
    image.save(out)


@app.command()
def plot(
    job_id: str,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("loss.png"),
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Write a PNG of the job's train and validation loss."""
    with reported_errors(), _client(address, api_key) as client:
        train, validation = loss_series(client.events(job_id, follow=False))
    if not train:
        err_console.print("no training steps recorded yet")
        raise typer.Exit(1)
    draw_png(train, validation, out, job_id)
    console.print(f"wrote {out}")
