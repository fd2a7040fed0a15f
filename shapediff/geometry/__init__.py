"""shapediff.geometry."""
