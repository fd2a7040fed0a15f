"""shapediff.training."""
