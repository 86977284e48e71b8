"""Runs a question file against the inference service, through the SDK, in every configuration.

Requests go out concurrently (the service batches them in vLLM). A configuration may
name several adapters: the seeds of one training recipe, scored separately and
aggregated. The reference rows are built from what retrieval gave the first RAG
configuration, so the baseline copies from exactly the passages the models saw.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from loraplex.client.inference import InferenceClient, generation_input
from loraplex.eval.baselines import always_abstain, extractive
from loraplex.eval.questions import Question
from loraplex.eval.recheck import judged, recheck
from loraplex.eval.scoring import Answer, Passage
from loraplex.eval.selective import THRESHOLDS, threshold_of
from loraplex.eval.text import cited_markers

#: The service's grounding fields kept with each answer (scored and stored, `policy_rows`).
GROUNDING_FIELDS = (
    "grounding_score",
    "grounded_threshold",
    "abstain_threshold",
    "checked_text",
    "checked_score",
)
EXTRACTIVE = "extractive baseline"
ABSTAIN = "always abstain"
REFERENCES = (EXTRACTIVE, ABSTAIN)


@dataclass(frozen=True)
class EvalConfig:
    """One configuration: adapters (one per training seed; "" is the base model), RAG, abstain.

    `model_row` names a second row scored from the same requests: the model's own text
    (`generated_text`, its own citation markers) before the service's checks, so the
    safeguards' effect is measured on identical generations at no extra cost.
    `refuse_row`, `off_row` and `quote_row` name rows for the abstain policies, also
    from the same requests: the service's check applied again to the model's text under
    that policy and the thresholds it was served with (`loraplex.eval.recheck`).
    """

    name: str
    adapters: tuple[str, ...] = ("",)
    rag: bool = True
    abstain: str = "off"
    model_row: str = ""
    refuse_row: str = ""
    off_row: str = ""
    quote_row: str = ""

    @classmethod
    def parse(cls, spec: str) -> EvalConfig:
        """`NAME:ADAPTERS[:rag][:abstain=POLICY][:model=ROW][:refuse|off|quote=ROW]`;
        ADAPTERS comma-separated, `base` = none.

        "base+RAG:base:rag", "tuned:acme/support@1,acme/support@2:rag:abstain=refuse",
        "checked:acme/support@1:rag:abstain=quote:model=unchecked:refuse=r:off=o".
        """
        name, sep, rest = spec.partition(":")
        parts = rest.split(":") if sep else []
        if not name or not parts or not parts[0]:
            raise ValueError(
                "--config looks like NAME:ADAPTERS[:rag][:abstain=POLICY][:model=ROW]"
                f"[:refuse=ROW][:off=ROW], got {spec!r}"
            )
        adapters = tuple("" if a in ("base", "-") else a for a in parts[0].split(","))
        rag, abstain, rows = False, "off", {"model": "", "refuse": "", "off": "", "quote": ""}
        for option in parts[1:]:
            key, _, value = option.partition("=")
            if option == "rag":
                rag = True
            elif key == "abstain":
                abstain = value
            elif key in rows and value:
                rows[key] = value
            else:
                raise ValueError(f"unknown option {option!r} in --config {spec!r}")
        if (rows["refuse"] or rows["off"] or rows["quote"]) and not rag:
            raise ValueError(f"policy rows need RAG: {spec!r}")
        return cls(name, adapters, rag, abstain, *rows.values())

    @property
    def policy_rows(self) -> dict[str, str]:
        """Policy -> row name, for the rows asked for."""
        rows = {"off": self.off_row, "refuse": self.refuse_row, "quote": self.quote_row}
        return {policy: row for policy, row in rows.items() if row}

    @property
    def extra_rows(self) -> tuple[str, ...]:
        return tuple(r for r in (self.model_row, *self.policy_rows.values()) if r)

    def model_config(self) -> EvalConfig:
        """The companion row's own configuration: the same requests, no service checks."""
        return EvalConfig(self.model_row, self.adapters, self.rag, "off")


@dataclass(frozen=True)
class EvalSettings:
    """What every request shares: the collection searched, retrieval depth and sampling."""

    collection: str = ""
    top_k: int = 3
    max_tokens: int = 48
    temperature: float = 0.0
    concurrency: int = 16
    system: str = ""


@dataclass
class EvalRun:
    """Answers per configuration, per seed, in question order."""

    questions: list[Question]
    configs: list[EvalConfig]
    settings: EvalSettings
    answers: dict[str, list[list[Answer]]] = field(default_factory=dict)
    seeds: dict[str, list[str]] = field(default_factory=dict)
    #: Per REFUSE/QUOTE configuration, what it would serve at each curve threshold.
    at_threshold: dict[str, dict[float, list[list[Answer]]]] = field(default_factory=dict)


def _has_field(message: object, name: str) -> bool:
    return name in message.DESCRIPTOR.fields_by_name  # type: ignore[attr-defined]


def answer_from_result(result: object, rag: bool) -> Answer:
    """The SDK's GenerationResult as an Answer; fields newer than the SDK read when present."""
    passages = []
    for c in result.citations:  # type: ignore[attr-defined]
        passages.append(
            Passage(
                number=c.number,
                text=c.text,
                cited=c.cited,
                document_id=c.document_id,
                support=c.support if _has_field(c, "support") else None,
                dropped=c.dropped if _has_field(c, "dropped") else False,
            )
        )
    refusal = ""
    if _has_field(result, "refusal_reason") and result.refusal_reason:  # type: ignore[attr-defined]
        refusal = (
            result.DESCRIPTOR.fields_by_name["refusal_reason"]
            .enum_type.values_by_number[  # type: ignore[attr-defined]
                result.refusal_reason  # type: ignore[attr-defined]
            ]
            .name
        )
    grounded = result.grounded if rag and _has_field(result, "grounded") else None  # type: ignore[attr-defined]
    extra = {}
    if _has_field(result, "generated_text") and result.generated_text != result.text:  # type: ignore[attr-defined]
        extra["generated_text"] = result.generated_text  # type: ignore[attr-defined]
    if _has_field(result, "quoted") and result.quoted:  # type: ignore[attr-defined]
        extra["quoted"] = True
    if rag and _has_field(result, "grounding_score"):
        for name in GROUNDING_FIELDS:
            extra[name] = getattr(result, name)
    return Answer(
        text=result.text.strip(),  # type: ignore[attr-defined]
        passages=tuple(passages),
        refusal_reason=refusal,
        grounded=grounded,
        adapter_ref=result.adapter_ref,  # type: ignore[attr-defined]
        extra=extra,
    )


def model_answer(answer: Answer) -> Answer:
    """The model's own text with the citations it wrote, before the service's checks."""
    text = answer.extra.get("generated_text", answer.text).strip()
    numbers = cited_markers(text)
    passages = tuple(
        Passage(p.number, p.text, p.number in numbers, p.document_id) for p in answer.passages
    )
    return Answer(text=text, passages=passages, adapter_ref=answer.adapter_ref)


def _check_abstain(configs: Sequence[EvalConfig]) -> None:
    if any(c.abstain != "off" for c in configs) and (
        "abstain" not in inspect.signature(generation_input).parameters
    ):
        raise ValueError("this SDK cannot ask the service to abstain (no `abstain` option)")
    for config in configs:
        if config.abstain != "off" and not config.rag:
            raise ValueError(f"configuration {config.name!r}: abstain needs RAG")


def run_eval(
    client: InferenceClient,
    questions: Sequence[Question],
    configs: Sequence[EvalConfig],
    settings: EvalSettings,
    progress: Callable[[int, int], None] | None = None,
) -> EvalRun:
    """Asks every question in every configuration and seed; adds the reference rows."""
    names = [c.name for c in configs] + [r for c in configs for r in c.extra_rows]
    if any(n in REFERENCES for n in names) or len(set(names)) < len(names):
        raise ValueError("configuration names must be unique and not name a reference row")
    if any(c.rag for c in configs) and not settings.collection:
        raise ValueError("a RAG configuration needs a collection")
    _check_abstain(configs)
    jobs = [
        (config, seed, i)
        for config in configs
        for seed in range(len(config.adapters))
        for i in range(len(questions))
    ]
    run = EvalRun(list(questions), list(configs), settings)
    for config in configs:
        run.answers[config.name] = [[None] * len(questions) for _ in config.adapters]  # type: ignore[list-item]
        run.seeds[config.name] = [a or "base" for a in config.adapters]
    done = 0
    lock = threading.Lock()

    def ask(job: tuple[EvalConfig, int, int]) -> None:
        nonlocal done
        config, seed, i = job
        options = {"abstain": config.abstain} if config.abstain != "off" else {}
        messages = [("system", settings.system)] if settings.system else []
        result = client.generate(
            messages=[*messages, ("user", questions[i].question)],
            adapter=config.adapters[seed],
            collection=settings.collection if config.rag else "",
            top_k=settings.top_k,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            **options,
        )
        run.answers[config.name][seed][i] = answer_from_result(result, config.rag)
        with lock:
            done += 1
            if progress:
                progress(done, len(jobs))

    with ThreadPoolExecutor(max_workers=max(1, settings.concurrency)) as pool:
        futures = [pool.submit(ask, job) for job in jobs]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the first failure ends the run
            raise
    add_model_rows(run)
    add_policy_rows(run)
    add_policy_curves(run)
    add_references(run)
    return run


def add_model_rows(run: EvalRun) -> None:
    """Each `model_row`, scored from its configuration's answers, placed just before it."""
    for config in [c for c in run.configs if c.model_row]:
        row = config.model_config()
        run.answers[row.name] = [
            [model_answer(a) for a in seed] for seed in run.answers[config.name]
        ]
        run.seeds[row.name] = run.seeds[config.name]
        run.configs.insert(run.configs.index(config), row)


def add_policy_rows(run: EvalRun) -> None:
    """Each policy row of a configuration, from its answers (`recheck`), placed before it."""
    for config in [c for c in run.configs if c.policy_rows]:
        for policy, row in config.policy_rows.items():
            if row in run.answers:  # stored with the run (`load_run`)
                continue
            run.answers[row] = [
                [recheck(q, a, policy) for q, a in zip(run.questions, seed, strict=True)]
                for seed in run.answers[config.name]
            ]
            run.seeds[row] = run.seeds[config.name]
            run.configs.insert(
                run.configs.index(config), EvalConfig(row, config.adapters, True, policy)
            )


def add_policy_curves(run: EvalRun) -> None:
    """For each REFUSE and QUOTE configuration asked of the service, its answers judged
    again at every threshold of the risk-coverage curve (the served text depends on the
    threshold). Policy rows are not: they would cost `make demo` a minute of CPU; their
    curves re-threshold the answers served at the default."""
    derived = {r for c in run.configs for r in c.extra_rows}
    for config in run.configs:
        if config.abstain not in ("refuse", "quote") or config.name in derived:
            continue
        seeds = run.answers[config.name]
        if threshold_of(seeds) is None:
            continue  # not served with a score: nothing to judge again
        run.at_threshold[config.name] = {
            t: [
                [
                    recheck(q, a, config.abstain, threshold=t)
                    for q, a in zip(run.questions, seed, strict=True)
                ]
                for seed in seeds
            ]
            for t in THRESHOLDS
        }


def recheck_run(run: EvalRun) -> None:
    """Every checked configuration's answers judged again by the current check, under
    its own policy and the thresholds each answer was served with."""
    model_rows = {c.model_row for c in run.configs if c.model_row}
    for config in run.configs:
        if config.rag and config.name not in model_rows:
            run.answers[config.name] = [
                [recheck(q, a, config.abstain) for q, a in zip(run.questions, seed, strict=True)]
                for seed in run.answers[config.name]
            ]


def add_references(run: EvalRun) -> None:
    """The extractive baseline (from the first RAG configuration's passages) and abstain."""
    rag = next((c for c in run.configs if c.rag), None)
    if rag is not None:
        given = run.answers[rag.name][0]
        threshold = threshold_of(run.answers[rag.name])
        run.answers[EXTRACTIVE] = [
            [
                judged(q.question, extractive(q.question, a.passages), threshold)
                for q, a in zip(run.questions, given, strict=True)
            ]
        ]
        run.seeds[EXTRACTIVE] = ["no model"]
    run.answers[ABSTAIN] = [[always_abstain() for _ in run.questions]]
    run.seeds[ABSTAIN] = ["no model"]


def load_run(summary: dict, questions: Sequence[Question]) -> EvalRun:
    """An `EvalRun` back from a results.json (`report.summarize`), to score it again.

    Questions come from the question file and are matched by id, so a fixed scorer (or
    a corrected gold fact) re-scores stored answers without asking the service again.
    """
    by_id = {q.id: q for q in questions}
    rows = summary["answers"]
    missing = [r["id"] for r in rows if r["id"] not in by_id]
    if missing:
        raise ValueError(f"the question file lacks {len(missing)} stored ids, e.g. {missing[0]!r}")
    configs = [
        EvalConfig(
            c["name"],
            tuple("" if a == "base" else a for a in c["seeds"]),
            c["rag"],
            c["abstain"],
            c.get("model_row", ""),
            c.get("refuse_row", ""),
            c.get("off_row", ""),
            c.get("quote_row", ""),
        )
        for c in summary["configs"]
        if not c["reference"]
    ]
    run = EvalRun([by_id[r["id"]] for r in rows], configs, EvalSettings(**summary["settings"]))
    for config in configs:
        seeds = len(rows[0][config.name]) if rows else 0
        run.answers[config.name] = [
            [_stored_answer(row, row[config.name][s]) for row in rows] for s in range(seeds)
        ]
        run.seeds[config.name] = [a["seed"] for a in rows[0][config.name]] if rows else []
    add_references(run)
    return run


def _stored_answer(row: dict, stored: dict) -> Answer:
    passages = tuple(
        Passage(
            number=number,
            text=row["passages"][ref]["text"],
            cited=cited,
            document_id=row["passages"][ref]["document_id"],
            support=support,
            dropped=dropped,
        )
        for ref, number, cited, support, dropped in stored["sources"]
    )
    extra = {k: stored[k] for k in ("generated_text", "quoted", *GROUNDING_FIELDS) if k in stored}
    return Answer(
        text=stored["answer"],
        passages=passages,
        refusal_reason=stored.get("refusal_reason", ""),
        grounded=stored.get("grounded"),
        adapter_ref=stored.get("adapter_ref", ""),
        extra=extra,
    )
