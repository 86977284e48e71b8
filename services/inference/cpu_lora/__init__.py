"""Grouped multi-LoRA ops for vLLM's CPU platform, shipped as a vLLM general plugin."""
