"""Adapter registry: versioned, per-tenant PEFT adapters (safetensors only)."""
