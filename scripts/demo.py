"""The main job on the embedded defaults, in one command (`make demo`).

Starts registry, retrieval, training and inference as local processes (SQLite,
local files, FAISS on disk, vLLM on the CPU) with the dev overlay's settings;
imports SmolLM2-135M-Instruct once; ingests the shipped Acme Robotics handbook;
trains tenant acme's house-style LoRA through the training service, sees it
published and aliased `prod`; asks held-out questions with adapter + RAG and
prints answers with citations; then scores base, base+RAG, adapter and
adapter+RAG on the held-out set. Every step is a `loraplex` CLI call you can
run by hand. Data lives in .loraplex/demo; results in results/quality/.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.quality_eval import main

if __name__ == "__main__":
    main(["--show", "3", *sys.argv[1:]])
