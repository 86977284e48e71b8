"""Held-out loss and perplexity, exact match of greedy answers, and a forgetting check.

The forgetting check measures perplexity on a small built-in sample of general
English before and after training: a big rise means the tune damaged the base.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from services.training.batching import (
    IGNORE,
    Example,
    encode_texts,
    make_batch,
    prompt_and_answer,
)

GENERAL_TEXT = [
    "The river runs through the city and people walk along it in the morning.",
    "Music and history are part of the life of every city in the world.",
    "A child in the group asked a question about the story of the water.",
    "This is a case where the fact is the point of the work of the week.",
    "It was a long day, and the woman went to the place where the music was.",
    "The number of people in the world grows each year, which is a problem for some.",
]


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 50.0))


@torch.no_grad()
def mean_loss(
    model: Any, examples: list[Example], batch_size: int, pack: bool, pad_id: int
) -> float:
    """Token-weighted mean loss over examples (the same weighting as training)."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = make_batch(chunk, pack, pad_id)
        tokens = int((batch["labels"][:, 1:] != IGNORE).sum())
        if tokens == 0:
            continue
        loss = model(**batch, use_cache=False).loss
        total += float(loss) * tokens
        count += tokens
    model.train()
    return total / count if count else float("nan")


def loss_metrics(prefix: str, loss: float) -> dict[str, float]:
    return {f"{prefix}_loss": loss, f"{prefix}_perplexity": _ppl(loss)}


def normalize(text: str) -> str:
    return " ".join(text.strip().lower().split())


@torch.no_grad()
def greedy_answer(model: Any, tokenizer: Any, row: dict[str, Any], max_new_tokens: int) -> str:
    messages, _ = prompt_and_answer(row)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    output = model.generate(
        **ids,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return tokenizer.decode(output[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def exact_match(model: Any, tokenizer: Any, rows: list[dict[str, Any]], limit: int = 64) -> float:
    """Share of rows whose greedy answer equals the reference (case and spacing ignored)."""
    rows = rows[:limit]
    if not rows:
        return float("nan")
    model.eval()
    hits = 0
    for row in rows:
        _, reference = prompt_and_answer(row)
        budget = len(tokenizer(reference, add_special_tokens=False).input_ids) + 4
        hits += normalize(greedy_answer(model, tokenizer, row, budget)) == normalize(reference)
    model.train()
    return hits / len(rows)


def general_perplexity(model: Any, tokenizer: Any, max_len: int, pad_id: int) -> float:
    examples = encode_texts(tokenizer, [{"text": t} for t in GENERAL_TEXT], max_len)
    return _ppl(mean_loss(model, examples, batch_size=8, pack=False, pad_id=pad_id))
