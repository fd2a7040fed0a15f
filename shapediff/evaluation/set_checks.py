"""What a reader must be told about a generation score: too few references, sets of unequal size, samples that are
references (equal clouds across the sets), and a 1-NNA below 50 % (which a 1-NN classifier cannot reach by skill)
named with its cause. Every scoring path (run outputs, presets, ``scripts/evaluate.py``) reports these."""

from __future__ import annotations

from shapediff.metrics.registry import GENERATION_STATISTICS, generation_key

__all__ = ["MIN_REFERENCES", "reference_warnings", "overlap_warnings"]

MIN_REFERENCES = 10  # below this, MMD / COV / 1-NNA say little (COV over 1 reference is 100 % for any model)


def reference_warnings(num_references: int, num_samples: int, source: str = "the split", *,
                       sizes_matched: bool = False) -> list[str]:
    """Too few references (in ``source``) for the samples given, or sets of unequal size (COV and 1-NNA then compare
    unequal sets; not said when ``sizes_matched``: the preset drops the extra samples). Warnings, not errors: a
    finished training still writes its outputs."""
    if num_references < min(MIN_REFERENCES, num_samples):
        return [f"only {num_references} reference shape(s) in {source} for {num_samples} samples: MMD / COV / 1-NNA "
                f"over so few "
                f"references are not meaningful (COV is 100 % with one); use at least {MIN_REFERENCES} references "
                f"(e.g. a larger split or more data)"]
    if num_references != num_samples and not sizes_matched:
        return [f"{num_samples} samples scored against {num_references} references: COV and 1-NNA compare sets of "
                f"different sizes (1-NNA's 50 % is then not the chance level); score as many samples as references"]
    return []


def overlap_warnings(metrics: dict, matrices: dict) -> list[str]:
    """Samples equal to a reference (distance 0: the sets overlap) and any 1-NNA below 50 %, with its cause.

    Args:
        metrics: the scores (``generation_metrics``' keys). matrices: {distance: (m_rr, m_rs, m_ss)}.
    """
    out = []
    causes = []
    for distance, (_, m_rs, _) in matrices.items():
        shared = int((m_rs == 0).any(dim=0).sum())
        if shared:
            out.append(f"{shared} of {m_rs.shape[1]} samples are equal to a reference (distance {distance.upper()} 0): "
                       f"the sample and reference sets overlap (were references scored as samples, or samples taken "
                       f"from the reference split?); MMD, COV and 1-NNA then flatter the samples")
            causes.append(f"{shared} samples equal to references")
            break
    r, s = next(iter(matrices.values()))[1].shape if matrices else (0, 0)
    if r != s:
        causes.append(f"unequal set sizes ({s} samples, {r} references)")
    one_nna = GENERATION_STATISTICS[2]
    for distance in matrices:
        key = generation_key(one_nna, distance)
        if key in metrics and metrics[key] < 0.5:
            cause = "; ".join(causes) if causes else (
                "no overlap or size difference found: chance at these set sizes (see the interval), few references "
                "per class (a reference's nearest other shape is then a sample of its class), or samples that sit "
                "between the references (near each class's average shape: too little diversity, see COV); a 1-NN "
                "classifier does not fall below 50 % by skill")
            out.append(f"{key} is {100 * metrics[key]:.1f} %, below 50 %: {cause}")
    return out

