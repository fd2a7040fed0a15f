"""Tables and seed summaries of evaluation results (Markdown, as the README and docs print them)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from shapediff.metrics.registry import GENERATION_STATISTICS, completion_keys, generation_key, metric_spec

__all__ = ["completion_table", "generation_table", "summarise_seeds"]


def completion_table(results: dict[str, dict[str, float]]) -> str:
    """A Markdown table of :func:`evaluate_completion`'s results (one row per method); with
    :func:`summarise_seeds`' spreads a cell reads "mean ± std"."""
    columns = completion_keys({key for row in results.values() for key in row})
    lines = ["| method | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for name, row in results.items():
        cells = []
        for c in columns:
            fmt = "%.1f" if metric_spec(c).kind == "timing" else "%.5f"
            cell = fmt % row[c] if c in row else ""
            if f"{c}_std" in row and cell:
                cell += " ± " + fmt % row[f"{c}_std"]
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def generation_table(metrics: dict, names: Sequence[str]) -> str:
    """The PointFlow table: MMD (x1e3 for CD, x1e2 for EMD, as papers print them), COV % and 1-NNA %."""
    rows = ["| metric | MMD | COV (%) | 1-NNA (%) |", "|---|---:|---:|---:|"]
    for name in names:
        (mmd, s_mmd), (cov, s_cov), (nna, s_nna) = (
            (metrics[key], metric_spec(key).scale) for key in (generation_key(stat, name) for stat in GENERATION_STATISTICS))
        rows.append(f"| {name.upper()} | {mmd * s_mmd:.3f} (x{s_mmd:g}) | {s_cov * cov:.1f} | {s_nna * nna:.1f} |")
    return "\n".join(rows)


def summarise_seeds(runs: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean and spread over seeds of several :func:`evaluate_completion` results.

    Returns ``{name: {metric: mean, metric + "_std": sample std (0 for one run), metric + "_min",
    metric + "_max"}}`` over the runs that hold ``name``.
    """
    if not runs:
        raise ValueError("runs: expected at least one evaluate_completion result, got none")
    out: dict[str, dict[str, float]] = {}
    for name in runs[0]:
        rows = [r[name] for r in runs if name in r]
        out[name] = {}
        for metric in rows[0]:
            values = torch.tensor([row[metric] for row in rows], dtype=torch.float64)
            std = float(values.std()) if len(values) > 1 else 0.0
            out[name] |= {metric: float(values.mean()), f"{metric}_std": std,
                          f"{metric}_min": float(values.min()), f"{metric}_max": float(values.max())}
    return out
