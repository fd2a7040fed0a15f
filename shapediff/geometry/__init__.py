"""shapediff.geometry: point-cloud geometry ops (one home each), pure PyTorch."""

from shapediff.geometry.chamfer import chamfer_distance
from shapediff.geometry.emd import emd
from shapediff.geometry.knn import KNN, knn_points
from shapediff.geometry.point_ops import ball_query, farthest_point_sample, gather_points, three_nn_interpolate
from shapediff.geometry.validation import check_points
from shapediff.geometry.partial_scan import DepthScan, hidden_point_removal, random_viewpoint, resample_points, virtual_scan, visible_subset
from shapediff.geometry.marching_cubes import keep_components, mesh_components, sdf_to_mesh
from shapediff.geometry.mesh_io import load_mesh, load_points, save_mesh, save_points
from shapediff.geometry.reconstruction import points_to_mesh
