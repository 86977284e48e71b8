"""Evaluate what users get: a question file against the running inference service.

    from loraplex.client import InferenceClient
    from loraplex.eval import EvalConfig, EvalSettings, load_questions, evaluate

    with InferenceClient() as client:
        summary = evaluate(
            client, load_questions("questions.jsonl"),
            [EvalConfig("tuned+RAG", ("acme/support@1", "acme/support@2"), rag=True)],
            EvalSettings(collection="handbook"),
        )
    print(markdown(summary))

The question format is described in `loraplex.eval.questions`; the metrics in
`loraplex.eval.scoring`; `loraplex eval` is the same from the command line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from loraplex.client.inference import InferenceClient
from loraplex.eval.questions import Question, QuestionFileError, load_questions
from loraplex.eval.report import markdown, summarize, to_json
from loraplex.eval.runner import EvalConfig, EvalRun, EvalSettings, run_eval


def evaluate(
    client: InferenceClient,
    questions: Sequence[Question],
    configs: Sequence[EvalConfig],
    settings: EvalSettings,
    *,
    target: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Runs every configuration (and the reference rows) and returns the summary."""
    return summarize(run_eval(client, questions, configs, settings, progress), target)


__all__ = [
    "EvalConfig",
    "EvalRun",
    "EvalSettings",
    "Question",
    "QuestionFileError",
    "evaluate",
    "load_questions",
    "markdown",
    "run_eval",
    "summarize",
    "to_json",
]
