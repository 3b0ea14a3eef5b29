"""Detection: the RetinaNet detector and its training."""
