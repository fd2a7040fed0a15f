"""shapediff.data."""
