"""Reusable layers: time embeddings, attention, norms."""

from shapediff.nn.embeddings import TimestepEmbedder, timestep_embedding

__all__ = ["TimestepEmbedder", "timestep_embedding"]
