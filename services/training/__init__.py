"""Training service: datasets in, fine-tuning jobs in worker processes, adapters out."""
