"""A tiny Llama (tokenizer trained on the spot) and random LoRA adapters for it.

Small enough that vLLM's CPU engine starts in seconds and peft runs instantly, real
enough that both load it through their normal paths. No hub access anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, this is loraplex speaking",
    "question: what is the refund window? answer: thirty days",
    "question: who approves travel? answer: your manager",
    "answer: yes",
    "answer: no",
    "sources [1] [2] [3] according to the handbook",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def build_tiny_llama(
    folder: Path, hidden: int = 128, layers: int = 2, heads: int = 4, seed: int = 0
) -> Path:
    """Writes a randomly initialised Llama + BPE tokenizer with a chat template to `folder`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=1024,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def make_random_lora(
    folder: Path,
    base_model: Path,
    rank: int = 8,
    seed: int = 1,
    targets: tuple[str, ...] = ("q_proj", "v_proj", "o_proj", "gate_proj"),
    scale: float = 0.5,
    base_model_name: str | None = None,
    layers: tuple[int, ...] | None = None,
) -> Path:
    """A peft LoRA adapter with random (non-zero) B matrices, so it visibly changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(
        LlamaForCausalLM.from_pretrained(base_model),
        LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            target_modules=list(targets),
            layers_to_transform=list(layers) if layers else None,
        ),
    )
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=scale)
    model.save_pretrained(folder, safe_serialization=True)
    if base_model_name:
        config_path = folder / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = base_model_name
        config_path.write_text(json.dumps(config))
    return folder
