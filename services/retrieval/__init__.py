"""Retrieval service: per-tenant document collections in FAISS, searched for RAG grounding."""
