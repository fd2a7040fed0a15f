"""shapediff.models."""
