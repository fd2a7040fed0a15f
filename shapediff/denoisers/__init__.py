"""shapediff.denoisers."""
