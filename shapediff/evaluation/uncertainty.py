"""Scores with their uncertainty: a model scored over several sampling seeds (per-seed values, mean, spread and an
interval over references and samples for every set statistic), and two models or sample sets compared on the same
references and seeds (paired differences with an interval, and a plain sentence). The intervals come from
``shapediff.metrics.intervals`` on the distance matrices the scores were computed from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from shapediff.data.references import reference_clouds
from shapediff.evaluation.generation import evaluate_generation
from shapediff.evaluation.protocol_runs import evaluate
from shapediff.metrics.intervals import DEFAULT_ROUNDS, paired_set_intervals, set_intervals
from shapediff.metrics.registry import is_generation_key, metric_spec

__all__ = ["score_seeds", "seed_summary", "compare_scores", "difference_sentence", "summary_table"]

MIN_INTERVAL_SIZE = 8  # split into quarters of at least 2
METHOD = ("split-half with size extrapolation over references and samples (shapediff.metrics.intervals); "
          "centre: the mean over seeds; estimand: the score's expectation at these set sizes")


def score_seeds(model, ref_dataset, num_samples: int, seeds: Sequence[int], *, protocol: str | None = None,
                metrics: Sequence[str] = ("cd",), device: str = "auto", **sample_kwargs: Any
                ) -> tuple[list[dict], list[dict]]:
    """Score ``model`` once per sampling seed against ``num_samples`` references of ``ref_dataset``.

    ``protocol`` None: the run outputs' scorer (``evaluate_generation``, the ``exact`` preset, ``metrics``); a
    preset name: ``evaluate`` under it. Returns (scores, matrices): one metrics dict and one
    ``{distance: (m_rr, m_rs, m_ss)}`` per seed.
    """
    scores, matrices = [], []
    for seed in seeds:
        mats: dict = {}
        if protocol is None:
            _, score = evaluate_generation(model, ref_dataset, num_samples, metrics=tuple(metrics), seed=seed,
                                           matrices=mats, **sample_kwargs)
        else:
            refs = reference_clouds(ref_dataset, num_samples, seed)
            score = evaluate(model, refs, protocol, seed=seed, device=device, matrices=mats, **sample_kwargs)
        scores.append(score | {"seed": seed})
        matrices.append(mats)
    return scores, matrices


def _generation_keys(score: dict) -> list[str]:
    return [key for key in score if is_generation_key(key)]


def seed_summary(scores: Sequence[dict], matrices: Sequence[dict], seeds: Sequence[int] | None = None, *,
                 rounds: int = DEFAULT_ROUNDS, level: float = 0.95) -> dict[str, Any]:
    """Per-seed values, mean, spread (sample std over seeds, 0 for one) and interval of every set statistic.

    Returns {"seeds", "per_seed": {key: [values]}, "mean", "std", "intervals": {key: {"value", "low", "high", "se",
    "level", "rounds"}}, "interval_method", "num_samples", "num_references"}; keys as ``generation_metrics``'.
    """
    keys = _generation_keys(scores[0])
    per_seed = {key: [float(s[key]) for s in scores] for key in keys}
    values = torch.tensor([per_seed[k] for k in keys], dtype=torch.float64)  # (keys, seeds)
    std = values.std(dim=1) if values.shape[1] > 1 else torch.zeros(len(keys), dtype=torch.float64)
    intervals: dict[str, dict] = {}
    m_rs = next(iter(matrices[0].values()))[1]
    note = {}
    if min(m_rs.shape) < MIN_INTERVAL_SIZE:
        note = {"intervals_note": f"no intervals: they need at least {MIN_INTERVAL_SIZE} references and samples, got "
                                  f"{m_rs.shape[0]} and {m_rs.shape[1]}"}
    else:
        for distance in matrices[0]:
            intervals |= set_intervals([m[distance] for m in matrices], scores, distance, rounds=rounds, level=level)
    return note | {"seeds": list(seeds) if seeds is not None else [s.get("seed") for s in scores], "per_seed": per_seed,
            "mean": dict(zip(keys, values.mean(dim=1).tolist())), "std": dict(zip(keys, std.tolist())),
            "intervals": intervals, "interval_method": METHOD, "num_samples": int(m_rs.shape[1]),
            "num_references": int(m_rs.shape[0])}


def compare_scores(scores_a: Sequence[dict], matrices_a: Sequence[dict], scores_b: Sequence[dict],
                   matrices_b: Sequence[dict], names: tuple[str, str] = ("A", "B"), *, rounds: int = DEFAULT_ROUNDS,
                   level: float = 0.95) -> dict[str, Any]:
    """Paired differences of A and B (scored on the same references and seeds) on every set statistic.

    Returns {"names", "differences": {key: {"value" (how much better A is; > 0: A better), "low", "high", "se",
    "a", "b", ...}}, "sentences": {key: str}, "interval_method"}.
    """
    differences: dict[str, dict] = {}
    for distance in matrices_a[0]:
        differences |= paired_set_intervals([m[distance] for m in matrices_a], [m[distance] for m in matrices_b],
                                            scores_a, scores_b, distance, rounds=rounds, level=level)
    return {"names": list(names), "differences": differences,
            "sentences": {key: difference_sentence(key, iv, *names) for key, iv in differences.items()},
            "interval_method": METHOD + "; the same splits for both"}


def difference_sentence(key: str, interval: dict, name_a: str = "A", name_b: str = "B") -> str:
    """"A is better than B on 1-NNA-CD by 4.1 points, 95 % interval 1.2-7.0", or that the difference is within
    chance when the interval holds 0 (``interval`` from ``paired_set_intervals``: value > 0 when A is better)."""
    spec = metric_spec(key)
    scale, unit = spec.scale, "points" if spec.scale == 100.0 else f"(x{spec.scale:g})"
    value, low, high = (interval[k] * scale for k in ("value", "low", "high"))
    level = f"{100 * interval['level']:g} % interval"
    ahead, behind, by, lo, hi = (name_a, name_b, value, low, high) if value >= 0 else (name_b, name_a, -value, -high,
                                                                                       -low)
    if lo > 0:
        return f"{ahead} is better than {behind} on {key} by {by:.3g} {unit}, {level} {lo:.3g} to {hi:.3g}"
    return (f"{ahead} is ahead of {behind} on {key} by {by:.3g} {unit}, within chance: {level} {lo:.3g} to {hi:.3g} "
            f"holds 0")


def summary_table(summary: dict) -> str:
    """Markdown: metric | mean ± std over seeds | per seed | interval, in the registry's table units."""
    level = next(iter(summary["intervals"].values()), {}).get("level", 0.95)
    rows = [f"| metric | mean ± std (seeds) | per seed | {100 * level:g} % interval |", "|---|---:|---:|---:|"]
    for key, mean in summary["mean"].items():
        scale = metric_spec(key).scale
        unit = " %" if scale == 100.0 else f" (x{scale:g})"
        iv = summary["intervals"].get(key)
        per = " / ".join(f"{v * scale:.3g}" for v in summary["per_seed"][key])
        interval = f"{iv['low'] * scale:.3g} to {iv['high'] * scale:.3g}" if iv else ""
        rows.append(f"| {key}{unit} | {mean * scale:.3g} ± {summary['std'][key] * scale:.2g} | {per} | {interval} |")
    return "\n".join(rows)
