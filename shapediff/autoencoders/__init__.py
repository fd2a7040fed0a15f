"""shapediff.autoencoders."""
