"""A tiny Llama and a tokenizer trained on the spot: a "base model" that runs in seconds.

Nothing is downloaded: the vocabulary comes from the toy corpus, the weights from a
seeded random init, and the chat template is a short Jinja string.
"""

from __future__ import annotations

import json
from pathlib import Path

from services.training.evaluation import GENERAL_TEXT

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}<|assistant|> {{ m['content'] }}{{ eos_token }}"
    "{% else %}<|{{ m['role'] }}|> {{ m['content'] }} {% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"]

COLORS = ["red", "blue", "green", "yellow", "black", "white", "purple", "orange"]
FRUITS = ["apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "plum"]


def toy_rows(n_repeats: int = 4) -> list[dict[str, str]]:
    """A learnable mapping: 'what color is the <fruit>' -> a fixed color per fruit."""
    rows = []
    for _ in range(n_repeats):
        for fruit, color in zip(FRUITS, COLORS, strict=True):
            rows.append({"prompt": f"what color is the {fruit} ?", "completion": color})
    return rows


def toy_text_rows(n: int = 32) -> list[dict[str, str]]:
    return [
        {"text": f"the {FRUITS[i % 8]} is {COLORS[i % 8]} and the river is {COLORS[(i + 3) % 8]}"}
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def build_tiny_model(folder: Path, *, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Writes config, safetensors weights and a fast tokenizer with a chat template."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    corpus = [f"what color is the {f} ? {c}" for f in FRUITS for c in COLORS]
    corpus += GENERAL_TEXT
    corpus += [r["text"] for r in toy_text_rows()]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=SPECIALS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # A random 64-wide head with the default 0.02 init caps logits near ±1, so a frozen
        # head (every adapter method) could never become confident; real heads are not flat.
        model.lm_head.weight.mul_(25.0)
    model.save_pretrained(folder, safe_serialization=True)
    return folder
