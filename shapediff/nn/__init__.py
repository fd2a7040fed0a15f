"""Reusable layers: time embeddings, attention, norms."""

from shapediff.nn.attention import SpatialSelfAttention, SqueezeExcitation
from shapediff.nn.embeddings import TimestepEmbedder, timestep_embedding

__all__ = ["SpatialSelfAttention", "SqueezeExcitation", "TimestepEmbedder", "timestep_embedding"]
