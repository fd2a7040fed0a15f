"""shapediff.data: datasets (procedural synthetic shapes, ShapeNet layouts, folders of files)."""

from shapediff.data.synthetic import CATEGORIES as SYNTHETIC_CATEGORIES
from shapediff.data.synthetic import SyntheticShapes
from shapediff.data.synsets import CATEGORY_TO_SYNSET, SYNSET_TO_CATEGORY, to_synset
from shapediff.data.shapenet import ShapeNetPC15k
from shapediff.data.meshes import MeshFolder, PointCloudFolder, ShapeNetCoreMeshes, meshes_to_points, sample_surface
from shapediff.data.genre import GenReScans
from shapediff.data.partial import PartialScans
from shapediff.data.tsdf_dataset import TSDFDataset

__all__ = [
    "CATEGORY_TO_SYNSET", "GenReScans", "MeshFolder", "PartialScans", "PointCloudFolder", "SYNSET_TO_CATEGORY", "SYNTHETIC_CATEGORIES",
    "ShapeNetCoreMeshes", "ShapeNetPC15k", "SyntheticShapes", "TSDFDataset", "meshes_to_points", "sample_surface", "to_synset",
]
