"""Named evaluation protocols: the settings under which a published table's numbers were computed.

The field's tables are not comparable with each other (docs/protocols.md): they differ in the EMD
(approxmatch with a Euclidean or squared cost, or exact), the normalisation and frame in which
distances are taken, the reference split and size, the Chamfer convention and the printed units.
A preset fixes all of them, so a score can be put next to the paper it names. Every result records
its preset and the full settings (:meth:`GenerationProtocol.settings`).

Generation presets: ``pointflow``, ``pvd``, ``lion``, ``lion_normbox``, ``dpm``, ``exact``.
Completion presets: ``pcn_cd_l1``, ``shapenet55_cd_l2``, ``pvd_completion``.

Frames: shapediff models return samples in the data's own (de-normalised) coordinates, the frame
PointFlow, PVD and LION's Table 1 score in; ``bbox`` presets re-normalise every cloud to its own
bounding box first (DPM; LION's ShapeNet-Vol table).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Literal, Mapping

import torch

from shapediff.devices import resolve_device
from shapediff.evaluation.set_checks import overlap_warnings, reference_warnings
from shapediff.geometry.normalization import check_normalization, normalize_points
from shapediff.geometry.validation import check_points
from shapediff.metrics.completion import completion_metrics
from shapediff.metrics.generation import generation_metrics
from shapediff.metrics.registry import METRICS

GenerationNormalization = Literal["none", "bbox", "bbox_half"]
CompletionFrame = Literal["none", "gt_unit_sphere"]
POINTFLOW_SPLIT_SIZES = {"airplane": 405, "chair": 662, "car": 352}  # LION eval_helper.get_ref_num
DPM_SPLIT_SIZES = {"airplane": 607, "chair": 989, "car": 528}  # LION get_ref_num(luo_split=True)
logger = logging.getLogger("shapediff.evaluation")
TABLE_UNITS = {key: spec.scale for key, spec in METRICS.items() if spec.kind == "generation"}  # the registry's table scales


SCORING_SETTINGS = ("name", "follows", "code", "normalization", "chamfer", "emd_method", "emd_cost", "full_matrices",
                    "units")


@dataclass(frozen=True)
class GenerationProtocol:
    """How a generation table was scored: MMD / COV / 1-NNA over reference and sample sets.

    Attributes:
        name: preset name. follows: the paper. code: the files of its code this preset follows.
        reference_split: the split the references come from ("val": PointFlow's ShapeNet-15k split,
            which PointFlow, PVD and LION evaluate on; "test": DPM's own split).
        reference_sizes: references per category in that split (airplane / chair / car).
        samples: "as_many_as_references": one sample per reference (extra samples are dropped in
            order, as LION's ``compute_score`` does).
        num_points: points per cloud (clouds with more are subsampled at random, seeded).
        normalization: "none" (the data frame), "bbox" (each cloud centred on its bounding box and
            divided by half its longest side: [-1, 1], DPM ``shape_bbox``), "bbox_half" (the same
            times 0.5: [-0.5, 0.5], LION ``norm_box``).
        chamfer: "squared": mean squared NN distance both ways, summed.
        emd_method / emd_cost: "approxmatch" (euclidean: PointFlow; squared: PVD / LION), "exact",
            or None (no EMD: DPM's code returns zeros).
        full_matrices: fill every entry of M_rr / M_rs / M_ss with the row cloud as ``xyz1`` and take
            1-NNA's neighbours along columns, as the originals do (approxmatch is not symmetric);
            False: upper triangle mirrored (exact metrics are symmetric).
        units: factor applied to each raw value in the printed table.
    """

    name: str
    follows: str
    code: str
    reference_split: str = "val"
    reference_sizes: Mapping[str, int] = field(default_factory=lambda: dict(POINTFLOW_SPLIT_SIZES))
    samples: str = "as_many_as_references"
    num_points: int = 2048
    normalization: GenerationNormalization = "none"
    chamfer: Literal["squared"] = "squared"
    emd_method: Literal["approxmatch", "exact"] | None = "approxmatch"
    emd_cost: Literal["euclidean", "squared"] = "euclidean"
    full_matrices: bool = True
    units: Mapping[str, float] = field(default_factory=lambda: dict(TABLE_UNITS))
    notes: str = ""

    @property
    def metrics(self) -> tuple[str, ...]:
        return ("cd",) if self.emd_method is None else ("cd", "emd")

    def settings(self) -> dict:
        """Every setting as plain data, for metrics.json."""
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in asdict(self).items()}

    def scoring_settings(self) -> dict:
        """The settings that say how the scores are computed (frame, Chamfer, EMD, matrices, units), without the
        paper's data setting (reference split and sizes, sample rule, point count, notes on them): for sets the
        caller chose, whose sizes and point count are recorded beside the scores instead."""
        return {k: v for k, v in self.settings().items() if k in SCORING_SETTINGS}

    def normalize(self, clouds: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) clouds in the frame this protocol scores in."""
        return normalize_per_cloud(clouds, self.normalization)


@dataclass(frozen=True)
class CompletionProtocol:
    """How a completion table was scored: per-pair distances to the ground truth, averaged.

    Attributes:
        num_points: points of a completion and of its ground truth in the paper's setting.
        frame: "none" (the data frame the data set ships in) or "gt_unit_sphere" (both clouds
            shifted by the ground truth's centroid and divided by its largest point norm, the
            frame of PoinTr's ShapeNet-55 ``pc_norm``).
        chamfer: "l1": (mean_x d + mean_y d) / 2 (PoinTr ``ChamferDistanceL1``); "squared": mean
            d^2 + mean d^2 (``ChamferDistanceL2``, PVD).
        emd_method / emd_cost: EMD with the COMPLETION as approxmatch's ``xyz1`` (PVD ``EMD_CD``), or None.
        f_score_threshold: F-score distance threshold in the frame's units, or None.
        units: factor applied to each mean in the printed table.
    """

    name: str
    follows: str
    code: str
    num_points: int
    frame: CompletionFrame = "none"
    chamfer: Literal["l1", "squared"] = "l1"
    emd_method: Literal["approxmatch", "exact"] | None = None
    emd_cost: Literal["euclidean", "squared"] = "squared"
    f_score_threshold: float | None = 0.01
    units: Mapping[str, float] = field(default_factory=lambda: {"CD": 1e3, "EMD": 1e2, "F-score": 1.0})
    notes: str = ""

    @property
    def metrics(self) -> tuple[str, ...]:
        """The per-pair metrics this preset reports, by registry name."""
        return ("cd",) + (("emd",) if self.emd_method is not None else ()) + \
            (("f_score",) if self.f_score_threshold is not None else ())

    def settings(self) -> dict:
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in asdict(self).items()}

    def to_frame(self, pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pred (B, N, 3), gt (B, M, 3)) in the frame this protocol scores in (both by gt's transform)."""
        if self.frame == "none":
            return pred, gt
        centre = gt.mean(dim=1, keepdim=True)
        radius = (gt - centre).norm(dim=-1).amax(dim=1).clamp_min(1e-12)[:, None, None]
        return (pred - centre) / radius, (gt - centre) / radius


GENERATION_PROTOCOLS: dict[str, GenerationProtocol] = {
    p.name: p
    for p in (
        GenerationProtocol(
            "pointflow", "PointFlow (Yang et al., ICCV 2019), Table 1",
            "stevenygd/PointFlow test.py:evaluate_gen; metrics/evaluation_metrics.py:compute_all_metrics, "
            "emd_approx, _pairwise_EMD_CD_; metrics/pytorch_structural_losses/src/approxmatch.cu",
            emd_cost="euclidean",
            notes="samples and references de-normalised with the training set's global mean/std (data frame)"),
        GenerationProtocol(
            "pvd", "PVD (Zhou et al., ICCV 2021), Table 1",
            "alexzhou907/PVD test_generation.py:evaluate_gen, generate; metrics/evaluation_metrics.py:"
            "compute_all_metrics; metrics/PyTorchEMD/cuda/emd_kernel.cu",
            emd_cost="squared",
            notes="samples.pth (S, N, 3) in the data frame (gen * std + mean); references: the 'val' split, same frame"),
        GenerationProtocol(
            "lion", "LION (Zeng et al., NeurIPS 2022), Table 1 (norm_box=False)",
            "nv-tlabs/LION script/compute_score.py; utils/eval_helper.py:compute_score; "
            "utils/evaluation_metrics_fast.py:compute_all_metrics; third_party/PyTorchEMD",
            emd_cost="squared",
            notes="samples.pt (S, N, 3|6) and ref_val_<cat>.pt {'ref', 'mean', 'std'} are both de-normalised "
                  "with the reference file's mean/std; samples beyond the reference count are dropped"),
        GenerationProtocol(
            "lion_normbox", "LION (Zeng et al., NeurIPS 2022), ShapeNet-Vol / norm_box=True tables",
            "nv-tlabs/LION utils/eval_helper.py:compute_score(norm_box=True); utils/data_helper.py:normalize_point_clouds",
            normalization="bbox_half", emd_cost="squared",
            notes="every cloud centred on its bounding box, longest side scaled to 1 ([-0.5, 0.5])"),
        GenerationProtocol(
            "dpm", "DPM (Luo & Hu, CVPR 2021), Table 2",
            "luost26/diffusion-point-cloud test_gen.py (--normalize shape_bbox); evaluation/evaluation_metrics.py",
            reference_split="test", reference_sizes=dict(DPM_SPLIT_SIZES), normalization="bbox", emd_method=None,
            notes="DPM's own ShapeNet split (shapenet.hdf5); every cloud scaled to its bounding box ([-1, 1]); "
                  "its code sets EMD to zero, so only CD metrics"),
        GenerationProtocol(
            "exact", "shapediff's own: exact EMD (not comparable with approxmatch tables)",
            "shapediff/metrics/generation.py:generation_metrics; shapediff/geometry/emd.py (Hungarian)",
            emd_method="exact", emd_cost="euclidean", full_matrices=False,
            notes="the optimum of EMD, PointFlow's Euclidean cost; PointFlow's split and frame"),
    )
}

COMPLETION_PROTOCOLS: dict[str, CompletionProtocol] = {
    p.name: p
    for p in (
        CompletionProtocol(
            "pcn_cd_l1", "PCN (Yuan et al., 3DV 2018) benchmark as PoinTr (Yu et al., ICCV 2021) scores it",
            "yuxumin/PoinTr extensions/chamfer_dist/__init__.py:ChamferDistanceL1; datasets/PCNDataset.py; "
            "utils/metrics.py (F-Score@1%)",
            num_points=16384, chamfer="l1",
            notes="clouds in the frame PCN's data ships in; CD-L1 x 1e3"),
        CompletionProtocol(
            "shapenet55_cd_l2", "ShapeNet-55 / 34 (PoinTr, Yu et al., ICCV 2021)",
            "yuxumin/PoinTr extensions/chamfer_dist/__init__.py:ChamferDistanceL2; datasets/ShapeNet55Dataset.py:pc_norm",
            num_points=8192, frame="gt_unit_sphere", chamfer="squared",
            notes="both clouds in the ground truth's unit-sphere frame; CD-L2 x 1e3"),
        CompletionProtocol(
            "pvd_completion", "PVD (Zhou et al., ICCV 2021), shape completion table",
            "alexzhou907/PVD test_completion.py:evaluate_recon_mvr; metrics/evaluation_metrics.py:EMD_CD",
            num_points=2048, chamfer="squared", emd_method="approxmatch", emd_cost="squared", f_score_threshold=None,
            notes="data frame (x * std + mean); EMD approxmatch, squared cost, completion as xyz1; CD x 1e3, EMD x 1e2"),
    )
}


def get_protocol(name: str) -> GenerationProtocol | CompletionProtocol:
    """The preset called ``name`` (generation or completion)."""
    if isinstance(name, (GenerationProtocol, CompletionProtocol)):
        return name
    found = GENERATION_PROTOCOLS.get(name) or COMPLETION_PROTOCOLS.get(name)
    if found is None:
        known = sorted(GENERATION_PROTOCOLS) + sorted(COMPLETION_PROTOCOLS)
        raise ValueError(f"protocol: expected one of {known}, got {name!r}")
    return found


def normalize_per_cloud(clouds: torch.Tensor, mode: GenerationNormalization) -> torch.Tensor:
    """Per-cloud normalisation of (B, N, 3) clouds: "none", "bbox" ([-1, 1]) or "bbox_half" ([-0.5, 0.5]), the
    presets' modes of :mod:`shapediff.geometry.normalization`."""
    return normalize_points(clouds, check_normalization(mode, ("none", "bbox", "bbox_half")))


def match_counts(samples: torch.Tensor, refs: torch.Tensor, protocol: GenerationProtocol, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Apply the protocol's sample count and point count: (samples, refs, what was done).

    One sample per reference: extra samples are dropped in order (LION); fewer samples than
    references is an error. Point counts are brought to ``min(N_samples, N_refs, num_points)`` by a
    seeded random subset of each cloud's points (LION subsamples samples with more points).
    """
    if samples.shape[0] < refs.shape[0]:
        raise ValueError(f"samples: protocol {protocol.name!r} scores one sample per reference: expected at least "
                         f"{refs.shape[0]} samples, got {samples.shape[0]} (sample more, or pass fewer references)")
    done = {"samples_given": int(samples.shape[0]), "samples_dropped": int(samples.shape[0] - refs.shape[0])}
    samples = samples[: refs.shape[0]]
    n = min(samples.shape[1], refs.shape[1], protocol.num_points)
    gen = torch.Generator().manual_seed(seed)
    if samples.shape[1] > n:
        samples = samples[:, torch.randperm(samples.shape[1], generator=gen)[:n].to(samples.device)]
    if refs.shape[1] > n:
        refs = refs[:, torch.randperm(refs.shape[1], generator=gen)[:n].to(refs.device)]
    done["num_points"] = int(n)
    return samples, refs, done


def score_generation(samples: torch.Tensor, refs: torch.Tensor, protocol: str | GenerationProtocol = "exact", *,
                     seed: int = 0, batch_size: int | None = None, progress: bool = False,
                     device: str | torch.device | None = None, matrices: dict | None = None) -> dict:
    """MMD / COV / 1-NNA of ``samples`` (S, N, 3) against ``refs`` (R, N', 3) under a generation preset: the
    preset's counts and frame, then the one generation scorer (``metrics.generation_metrics``) with its settings.

    Both sets are taken in the preset's frame (``protocol.normalize``) after :func:`match_counts`.
    ``device``: where the distances are computed (default: ``samples``' device; "auto" picks CUDA
    when present). ``batch_size``: pairs per batched distance call (default 64 on CUDA, 8 on CPU;
    approxmatch further splits a batch to fit ``emd_approxmatch.DEFAULT_MAX_BYTES``). ``matrices``: a dict to
    receive each distance's matrices (``generation_metrics``).

    Returns:
        {"protocol", "protocol_settings", "MMD-CD", "COV-CD", "1-NNA-CD", [... "-EMD"] (raw: distances
        in the frame's units, COV and 1-NNA fractions), "reported": the same in the table's units,
        "num_samples", "num_references", "num_points", "samples_dropped"}.
    """
    p = get_protocol(protocol)
    if not isinstance(p, GenerationProtocol):
        raise ValueError(f"protocol: {p.name!r} is a completion protocol; expected a generation one")
    check_points(samples, "samples")
    check_points(refs, "refs")
    if device is not None:
        samples = samples.to(resolve_device(device))
    samples, refs, done = match_counts(samples, refs.to(samples.device), p, seed)
    samples, refs = p.normalize(samples), p.normalize(refs)
    if batch_size is None:
        batch_size = 64 if samples.device.type == "cuda" else 8
    out: dict = {"protocol": p.name, "protocol_settings": p.settings()}
    matrices = {} if matrices is None else matrices
    out.update(generation_metrics(samples, refs, p.metrics, batch_size=batch_size, progress=progress,
                                  chamfer_variant=p.chamfer, emd_method=p.emd_method or "exact", emd_cost=p.emd_cost,
                                  full_matrices=p.full_matrices, matrices=matrices))
    warnings = reference_warnings(int(refs.shape[0]), done["samples_given"], "the reference set", sizes_matched=True)
    warnings += overlap_warnings(out, matrices)
    out["reported"] = {f"{k} ({'%' if not k.startswith('MMD') else f'x{p.units[k]:g}'})": out[k] * p.units[k]
                       for k in p.units if k in out}
    out.update(num_samples=int(samples.shape[0]), num_references=int(refs.shape[0]), **done)
    if warnings:
        out["warnings"] = warnings
        for warning in warnings:
            logger.warning("evaluation: %s", warning)
    return out


def score_completion(pred: torch.Tensor, gt: torch.Tensor, protocol: str | CompletionProtocol, *,
                     pairs: dict | None = None) -> dict:
    """Mean completion distances of ``pred`` (B, N, 3) to ``gt`` (B, M, 3) under a completion preset: its frame, then
    the one completion scorer (``metrics.completion_metrics``) with its settings. ``pairs``: a dict to receive the
    per-pair values ({key: (B,)}, for intervals over shapes).

    Returns {"protocol", "protocol_settings", "CD", ["EMD"], ["F-score@t"] (means, frame units),
    "reported" (table units), "num_pairs", "num_points_pred", "num_points_gt"}.
    """
    p = get_protocol(protocol)
    if not isinstance(p, CompletionProtocol):
        raise ValueError(f"protocol: {p.name!r} is a generation protocol; expected a completion one")
    check_points(pred, "pred")
    check_points(gt, "gt")
    if pred.shape[0] != gt.shape[0]:
        raise ValueError(f"gt: expected {pred.shape[0]} ground-truth clouds (one per completion), got {gt.shape[0]}")
    pred, gt = p.to_frame(pred, gt.to(pred.device))
    out: dict = {"protocol": p.name, "protocol_settings": p.settings()}
    per_pair = completion_metrics(pred, gt, metrics=p.metrics, threshold=p.f_score_threshold or 0.01,
                                  chamfer_variant=p.chamfer, emd_method=p.emd_method or "exact", emd_cost=p.emd_cost)
    if pairs is not None:
        pairs.update(per_pair)
    out.update({key: float(values.double().mean()) for key, values in per_pair.items()})
    out["reported"] = {f"{k} (x{p.units[k.split('@')[0]]:g})": v * p.units[k.split("@")[0]]
                       for k, v in list(out.items()) if k.split("@")[0] in p.units}
    out.update(num_pairs=int(pred.shape[0]), num_points_pred=int(pred.shape[1]), num_points_gt=int(gt.shape[1]))
    return out
