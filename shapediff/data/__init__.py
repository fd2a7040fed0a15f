"""shapediff.data: datasets (procedural synthetic shapes, ShapeNet layouts, folders of files)."""

from shapediff.data.synthetic import CATEGORIES as SYNTHETIC_CATEGORIES
from shapediff.data.synthetic import SyntheticShapes

__all__ = ["SYNTHETIC_CATEGORIES", "SyntheticShapes"]
