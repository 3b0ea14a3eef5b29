"""Model versions: backbones, embeddings, classification and detection training."""
