"""The metric registry describes every key the metric functions, metrics.json files and tables hold."""

from __future__ import annotations

import pytest
import torch

from shapediff.evaluation import completion_table, summarise_seeds
from shapediff.geometry.chamfer import chamfer_distance
from shapediff.metrics import completion_metrics, generation_metrics
from shapediff.metrics.registry import METRICS, completion_keys, fscore_key, generation_key, metric_spec, resolve_fn


def test_every_key_the_metric_functions_return_is_registered():
    gen = torch.Generator().manual_seed(0)
    pred, gt, partial = (torch.rand(2, 3, 32, 3, generator=gen), torch.rand(2, 32, 3, generator=gen),
                         torch.rand(2, 8, 3, generator=gen))
    keys = set(completion_metrics(pred, gt, partial, threshold=0.05))
    keys |= set(generation_metrics(gt, torch.rand(2, 32, 3, generator=gen), metrics=("cd", "emd")))
    assert keys == {"CD", "EMD", "F-score@0.05", "UHD", "TMD", "MMD-CD", "COV-CD", "1-NNA-CD", "MMD-EMD", "COV-EMD",
                    "1-NNA-EMD"}
    for key in keys:
        assert metric_spec(key).key == key


def test_directions_units_and_functions():
    assert metric_spec("CD").direction == "lower" and metric_spec("COV-EMD").direction == "higher"
    assert metric_spec("1-NNA-CD").direction == "half"  # 0.5 is ideal, not 0 or 1
    assert metric_spec(fscore_key(0.02)).direction == "higher" and fscore_key(0.02) == "F-score@0.02"
    assert resolve_fn("CD") is chamfer_distance
    assert generation_key("MMD", "cd") == "MMD-CD"
    with pytest.raises(ValueError, match="no per-pair function"):
        resolve_fn("MMD-CD")
    with pytest.raises(ValueError, match="metric: expected one of"):
        metric_spec("F-score@soon")
    with pytest.raises(ValueError, match="statistic, distance"):
        generation_key("MEAN", "cd")
    assert all(spec.units for spec in METRICS.values())


def test_tables_take_their_columns_from_the_registry():
    """A threshold other than 0.01 used to lose its F-score column (the table had the literal "F-score@0.01")."""
    runs = [{"pvd": {"CD": 1.0, "F-score@0.02": 0.5, "seconds": 2.0}}, {"pvd": {"CD": 3.0, "F-score@0.02": 0.7,
                                                                             "seconds": 4.0}}]
    assert completion_keys(summarise_seeds(runs)["pvd"]) == ["CD", "F-score@0.02", "seconds"]
    table = completion_table(summarise_seeds(runs))
    assert table.splitlines()[0] == "| method | CD | F-score@0.02 | seconds |"
    assert "| pvd | 2.00000 ± 1.41421 | 0.60000 ± 0.14142 | 3.0 ± 1.4 |" in table


def test_generation_names_and_table_scales_come_from_the_registry():
    from shapediff.metrics.registry import GENERATION_STATISTICS, generation_distances, is_generation_key

    assert generation_distances() == ("cd", "emd")
    keys = {generation_key(stat, d) for stat in GENERATION_STATISTICS for d in generation_distances()}
    assert keys == {k for k in METRICS if is_generation_key(k)} and not is_generation_key("CD")
    assert metric_spec("MMD-CD").scale == 1e3 and metric_spec("MMD-EMD").scale == 1e2  # as papers print them
    assert metric_spec("COV-EMD").scale == 100.0 and metric_spec("CD").scale == 1.0
