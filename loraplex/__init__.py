"""loraplex: fine-tune LLMs with LoRA and serve them with RAG, over gRPC."""
