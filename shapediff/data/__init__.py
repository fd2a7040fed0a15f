"""shapediff.data: datasets (procedural synthetic shapes, ShapeNet layouts, folders of files)."""

from shapediff.data.synthetic import CATEGORIES as SYNTHETIC_CATEGORIES
from shapediff.data.synthetic import SyntheticShapes
from shapediff.data.partial import PartialScans

__all__ = ["PartialScans", "SYNTHETIC_CATEGORIES", "SyntheticShapes"]
