"""Anomaly versions: learn normal from good parts alone, score and localise what is not."""
