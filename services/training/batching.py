"""Rows to token ids with answer-only labels, and micro-batches without padding waste.

Packing puts a micro-batch's sequences end to end in one row with position ids that
restart at each sequence: transformers turns that into a block-diagonal causal mask,
so no token attends across sequences and no compute is spent on padding (callers must
pass `use_cache=False`: with a cache, transformers ignores the packing). Soft-prompt
methods prepend virtual tokens per sequence and cannot pack: they get padded batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

IGNORE = -100


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


class NoChatTemplate(ValueError):
    """The base model's tokenizer cannot format conversations."""


def to_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    if "messages" in row:
        return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    return [
        {"role": "user", "content": row["prompt"]},
        {"role": "assistant", "content": row["completion"]},
    ]


def prompt_and_answer(row: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
    messages = to_messages(row)
    return messages[:-1], messages[-1]["content"]


def encode_instruction(tokenizer: Any, row: dict[str, Any], max_len: int) -> Example | None:
    """Chat-template the row; only the final answer's tokens carry labels."""
    if not getattr(tokenizer, "chat_template", None):
        raise NoChatTemplate(
            "the base model's tokenizer has no chat template: add one to its tokenizer_config,"
            " or use task CONTINUED_PRETRAINING"
        )
    messages = to_messages(row)
    prompt_text = tokenizer.apply_chat_template(
        messages[:-1], tokenize=False, add_generation_prompt=True
    )
    full_text = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False).input_ids
    full_ids = tokenizer(full_text, add_special_tokens=False).input_ids
    if full_ids[: len(prompt_ids)] != prompt_ids:
        # Templates that re-tokenize the boundary differently: append the answer ourselves.
        answer = tokenizer(messages[-1]["content"], add_special_tokens=False).input_ids
        full_ids = prompt_ids + answer + [tokenizer.eos_token_id]
    if not full_ids or full_ids[-1] != tokenizer.eos_token_id:
        full_ids = [*full_ids, tokenizer.eos_token_id]
    labels = [IGNORE] * len(prompt_ids) + full_ids[len(prompt_ids) :]
    input_ids, labels = full_ids[:max_len], labels[:max_len]
    if all(label == IGNORE for label in labels[1:]):
        return None
    return Example(input_ids, labels)


def encode_texts(tokenizer: Any, rows: list[dict[str, Any]], max_len: int) -> list[Example]:
    """Continued pretraining: each text plus EOS, long texts cut into max_len windows."""
    examples = []
    for row in rows:
        ids = tokenizer(row["text"], add_special_tokens=False).input_ids
        if tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id, *ids]
        ids.append(tokenizer.eos_token_id)
        for start in range(0, len(ids), max_len):
            window = ids[start : start + max_len]
            if len(window) > 1:
                examples.append(Example(window, list(window)))
    return examples


def encode(tokenizer: Any, rows: list[dict[str, Any]], task: str, max_len: int) -> list[Example]:
    if task == "continued_pretraining":
        return encode_texts(tokenizer, rows, max_len)
    encoded = (encode_instruction(tokenizer, row, max_len) for row in rows)
    return [example for example in encoded if example is not None]


def packed_batch(examples: list[Example]) -> dict[str, torch.Tensor]:
    """One row, position ids restarting per sequence, no attention mask and no padding."""
    input_ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for example in examples:
        input_ids.extend(example.input_ids)
        # The first token of a sequence must not be predicted from the previous sequence.
        labels.extend([IGNORE, *example.labels[1:]])
        positions.extend(range(len(example.input_ids)))
    return {
        "input_ids": torch.tensor([input_ids]),
        "labels": torch.tensor([labels]),
        "position_ids": torch.tensor([positions]),
    }


def padded_batch(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded to the longest sequence in the batch, with an attention mask."""
    width = max(len(e.input_ids) for e in examples)
    ids, labels, mask = [], [], []
    for example in examples:
        pad = width - len(example.input_ids)
        ids.append(example.input_ids + [pad_id] * pad)
        labels.append(example.labels + [IGNORE] * pad)
        mask.append([1] * len(example.input_ids) + [0] * pad)
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "attention_mask": torch.tensor(mask),
    }


def make_batch(examples: list[Example], pack: bool, pad_id: int) -> dict[str, torch.Tensor]:
    return packed_batch(examples) if pack else padded_batch(examples, pad_id)


def real_tokens(examples: list[Example]) -> int:
    return sum(len(e.input_ids) for e in examples)
