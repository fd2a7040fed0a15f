"""shapediff.geometry: point-cloud geometry ops (one home each), pure PyTorch."""

from shapediff.geometry.knn import KNN, knn_points
from shapediff.geometry.point_ops import ball_query, farthest_point_sample, gather_points, three_nn_interpolate
from shapediff.geometry.validation import check_points
