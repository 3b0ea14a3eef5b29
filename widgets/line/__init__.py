"""The line console: status, new batch, retrain, compare and promote, timeline."""
