"""Classification: probe on frozen embeddings, fine-tuning, k-fold training."""
