"""Runs one vLLM CPU engine on a list of (token ids, adapter folder) rows and prints the outputs.

Used by the exactness tests to run an engine in a separate process, with or without the plugin
(the plugin is chosen per process, through `LORAPLEX_CPU_LORA`):

    python -m tests.integration.cpu_lora.engine_run SPEC.json  # -> one JSON line on stdout
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def generate_batches(
    llm: object, batches: list[list[tuple[list[int], str | None]]], new_tokens: int
) -> list[list[list[int]]]:
    """Greedy outputs of `llm` for each batch (one `generate` call per batch, so rows mix)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    params = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)
    ids: dict[str, int] = {}
    results = []
    for batch in batches:
        prompts = [TokensPrompt(prompt_token_ids=tokens) for tokens, _ in batch]
        requests = []
        for _, folder in batch:
            if folder is None:
                requests.append(None)
                continue
            ids.setdefault(folder, len(ids) + 1)
            requests.append(LoRARequest(Path(folder).name, ids[folder], folder))
        outputs = llm.generate(prompts, params, lora_request=requests, use_tqdm=False)
        results.append([list(out.outputs[0].token_ids) for out in outputs])
    return results


def punica_wrapper_state(worker: object) -> tuple[str, bool]:
    """Run inside the engine's worker (`LLM.collective_rpc`): which punica wrapper the LoRA
    manager built, and whether it runs the C++ ops."""
    manager = worker.model_runner.lora_manager._adapter_manager
    wrapper = next(iter(manager.punica_wrapper_mapping.values()))
    return type(wrapper).__name__, bool(getattr(wrapper, "_kernels", False))


def build_engine(model: str, max_loras: int, max_rank: int) -> object:
    """The engine every cpu_lora test uses: fp32, small KV cache, LoRA enabled."""
    from vllm import LLM

    return LLM(
        model=model,
        dtype="float32",
        enable_lora=True,
        max_lora_rank=max_rank,
        max_loras=max_loras,
        max_model_len=256,
        kv_cache_memory_bytes=256 * 1024 * 1024,
        seed=0,
    )


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    llm = build_engine(spec["model"], spec["max_loras"], spec["max_rank"])
    outputs = generate_batches(llm, spec["batches"], spec["new_tokens"])
    print("OUTPUTS " + json.dumps(outputs), flush=True)


if __name__ == "__main__":
    main()
