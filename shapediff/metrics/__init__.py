"""shapediff.metrics: evaluation metrics (Chamfer, EMD, F-score, MMD / COV / 1-NNA) and their registry
(``METRICS``, ``metric_spec``: results key -> display name, direction, units, function)."""

from shapediff.geometry.chamfer import chamfer_distance
from shapediff.geometry.emd import emd
from shapediff.metrics.completion import (
    completion_metrics,
    f_score,
    total_mutual_difference,
    unidirectional_hausdorff,
)
from shapediff.metrics.generation import generation_metrics, mmd_cov, one_nn_accuracy
from shapediff.metrics.pairwise import pairwise_distance_matrix
from shapediff.metrics.registry import METRICS, MetricSpec, fscore_key, generation_key, metric_spec
