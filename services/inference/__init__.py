"""Inference: one vLLM engine, per-request tenant LoRA adapters, grounded in retrieval."""
