"""shapediff.diffusion."""
