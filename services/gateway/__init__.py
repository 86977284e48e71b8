"""OpenAI platform routes over training and retrieval: files, fine-tuning, vector stores."""
