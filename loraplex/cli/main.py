"""`loraplex`: one command, a sub-command per service."""

from __future__ import annotations

import typer

from loraplex.cli import ask, docs, evaluation, keys, models, registry, suite, train

app = typer.Typer(
    name="loraplex",
    help="Fine-tune LLMs with LoRA and serve them with RAG, over gRPC.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(suite.app, name="suite")
app.add_typer(keys.app, name="keys")
app.add_typer(models.app, name="models")
app.add_typer(registry.app, name="registry")
app.add_typer(docs.app, name="docs")
app.add_typer(train.app, name="train")
app.add_typer(train.data_app, name="data")
app.command("ask")(ask.ask)
app.command("eval")(evaluation.eval_)


if __name__ == "__main__":
    app()
