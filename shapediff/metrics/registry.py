"""The metric registry: one entry per reported number, so that names, directions and units are written once.

Every key a metrics dict (``completion_metrics``, ``generation_metrics``), a metrics.json or a table holds is
built here (:func:`fscore_key`, :func:`generation_key`) and described here (:func:`metric_spec`): the display
name, whether lower or higher is better (1-NNA: 0.5 is best), the units, and the function that computes the
per-pair value where there is one. The scorers run it: ``completion_metrics`` computes each selected per-pair metric
with its ``fn`` and ``options``, ``pairwise_distance_matrix`` fills the generation matrices with the ``fn`` of the
distance. A metric is selected by its ``name`` (``--metrics cd emd f_score``, ``evaluation.metrics``); an unknown
name is a ValueError everywhere (:func:`check_metric_names`). Adding a metric is one entry.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable
from typing import Literal, NamedTuple

__all__ = ["MetricSpec", "METRICS", "CD", "EMD", "UHD", "TMD", "SECONDS", "GENERATION_STATISTICS", "metric_spec",
           "fscore_key", "generation_key", "generation_distances", "is_generation_key", "completion_keys", "resolve_fn",
           "pair_metric_names", "pair_metric", "check_metric_names", "bound_fn", "pair_result_key"]

Direction = Literal["lower", "higher", "half"]


class MetricSpec(NamedTuple):
    """A reported number: ``key`` in results, ``display`` name in tables, ``direction`` of better ("lower",
    "higher", or "half": 0.5 is ideal, 1-NNA), ``units``, ``kind`` ("completion" per pair, "generation" per set,
    "timing"), ``fn`` (the per-pair function, where there is one; a dotted path, imported on use), ``scale``
    (the factor tables print it with: MMD-CD x1e3, MMD-EMD x1e2 as papers do, fractions x100 as %), ``name`` (what
    ``--metrics`` selects it by, for the metrics a user selects) and ``options`` (pairs (scorer setting, keyword of
    ``fn``): how the scorers' settings reach the function)."""
    key: str
    display: str
    direction: Direction
    units: str
    kind: str
    fn: str | None = None
    scale: float = 1.0
    name: str | None = None
    options: tuple[tuple[str, str], ...] = ()


def _spec(key, display, direction, units, kind, fn=None, scale=1.0, name=None, options=()) -> tuple[str, MetricSpec]:
    return key, MetricSpec(key, display, direction, units, kind, fn, scale, name, options)


# The keys code writes results under (names written once, here).
CD, EMD, UHD, TMD, SECONDS = "CD", "EMD", "UHD", "TMD", "seconds"
GENERATION_STATISTICS = ("MMD", "COV", "1-NNA")


METRICS: dict[str, MetricSpec] = dict([
    _spec(CD, "CD", "lower", "squared distance (data units^2), both directions summed", "completion",
          "shapediff.geometry.chamfer.chamfer_distance", name="cd", options=(("chamfer_variant", "variant"),)),
    _spec(EMD, "EMD", "lower", "mean matched distance (data units; cost named by the protocol)", "completion",
          "shapediff.geometry.emd.emd", name="emd", options=(("emd_cost", "cost"), ("emd_method", "method"))),
    _spec("F-score", "F-score", "higher", "fraction in [0, 1] at a distance threshold", "completion",
          "shapediff.metrics.completion.f_score", name="f_score", options=(("threshold", "threshold"),)),
    _spec(UHD, "UHD", "lower", "distance (data units)", "completion",
          "shapediff.metrics.completion.unidirectional_hausdorff"),
    _spec(TMD, "TMD", "higher", "squared distance (data units^2), diversity of hypotheses", "completion",
          "shapediff.metrics.completion.total_mutual_difference"),
    _spec("MMD-CD", "MMD-CD", "lower", "squared distance (data units^2)", "generation", scale=1e3),
    _spec("COV-CD", "COV-CD", "higher", "fraction of references covered", "generation", scale=100.0),
    _spec("1-NNA-CD", "1-NNA-CD", "half", "fraction (0.5 is ideal)", "generation", scale=100.0),
    _spec("MMD-EMD", "MMD-EMD", "lower", "mean matched distance (data units)", "generation", scale=1e2),
    _spec("COV-EMD", "COV-EMD", "higher", "fraction of references covered", "generation", scale=100.0),
    _spec("1-NNA-EMD", "1-NNA-EMD", "half", "fraction (0.5 is ideal)", "generation", scale=100.0),
    _spec(SECONDS, "seconds", "lower", "wall-clock seconds", "timing"),
])

_FSCORE = re.compile(r"^F-score@([0-9.eE+-]+)$")


def fscore_key(threshold: float) -> str:
    """The results key of the F-score at ``threshold`` (data units): ``"F-score@0.01"``."""
    return f"F-score@{threshold:g}"


def generation_key(statistic: str, distance: str) -> str:
    """The results key of a generation statistic ("MMD", "COV", "1-NNA") over a distance ("cd", "emd")."""
    key = f"{statistic}-{distance.upper()}"
    if key not in METRICS:
        raise ValueError(f"statistic, distance: expected MMD / COV / 1-NNA and cd / emd, got {statistic!r}, {distance!r}")
    return key


def generation_distances() -> tuple[str, ...]:
    """The distances generation statistics are reported over, as ``evaluate --metrics`` names them: ("cd", "emd")."""
    return tuple(dict.fromkeys(key.rsplit("-", 1)[1].lower() for key, spec in METRICS.items() if spec.kind == "generation"))


def is_generation_key(key: str) -> bool:
    """Whether ``key`` is a generation statistic's results key (MMD / COV / 1-NNA over a distance)."""
    return key in METRICS and METRICS[key].kind == "generation"


def metric_spec(key: str) -> MetricSpec:
    """The registry entry of a results key (``"F-score@0.02"`` resolves to the F-score entry at that threshold)."""
    if key in METRICS:
        return METRICS[key]
    match = _FSCORE.match(key)
    if match:
        base = METRICS["F-score"]
        return base._replace(key=key, display=f"F-score@{match.group(1)}", units=f"{base.units} {match.group(1)}")
    raise ValueError(f"metric: expected one of {sorted(METRICS)} or 'F-score@<threshold>', got {key!r}")


def completion_keys(keys) -> list[str]:
    """The completion-table columns among ``keys``, in the registry's order (F-scores where "F-score" stands)."""
    keys = set(keys)
    out: list[str] = []
    for key, spec in METRICS.items():
        if spec.kind not in ("completion", "timing"):
            continue
        out += sorted(k for k in keys if _FSCORE.match(k)) if key == "F-score" else [key] if key in keys else []
    return out


def resolve_fn(key: str) -> Callable:
    """The per-pair function of ``key`` (imported on use, so the registry costs no import; the paths are this
    module's constants, never user input)."""
    spec = metric_spec(key)
    if spec.fn is None:
        raise ValueError(f"metric {key!r}: is a statistic over sets, with no per-pair function")
    module, _, attr = spec.fn.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def pair_metric_names() -> tuple[str, ...]:
    """The per-pair metrics a user selects, by name, in the registry's order: ("cd", "emd", "f_score")."""
    return tuple(spec.name for spec in METRICS.values() if spec.name is not None)


def pair_metric(name: str) -> MetricSpec:
    """The registry entry a selection name ("cd", "emd", "f_score") stands for."""
    for spec in METRICS.values():
        if spec.name is not None and spec.name == name:
            return spec
    raise ValueError(f"metrics: expected names among {list(pair_metric_names())}, got {name!r}")


def check_metric_names(names, allowed: tuple[str, ...], argument: str = "metrics") -> tuple[str, ...]:
    """``names`` as a tuple without repeats, in the order of ``allowed``; a ValueError naming ``argument`` for an
    empty selection, a plain string or any name not in ``allowed`` (never dropped silently)."""
    if isinstance(names, str) or not names or any(n not in allowed for n in names):
        raise ValueError(f"{argument}: expected a non-empty subset of {list(allowed)}, got {names!r}")
    return tuple(n for n in allowed if n in names)


def bound_fn(name: str, settings: dict) -> Callable:
    """The per-pair function of the metric selected as ``name``, with the scorer's ``settings`` (e.g.
    ``chamfer_variant``, ``emd_cost``, ``emd_method``, ``threshold``) passed as the keywords its entry names."""
    spec = pair_metric(name)
    return functools.partial(resolve_fn(spec.key), **{kw: settings[opt] for opt, kw in spec.options})


def pair_result_key(spec: MetricSpec, settings: dict) -> str:
    """The results key a per-pair metric is written under, given the scorer's settings (the F-score's names its
    threshold: "F-score@0.01")."""
    return fscore_key(settings["threshold"]) if spec.key == "F-score" else spec.key
