"""shapediff.viz."""
