"""shapediff.metrics."""
