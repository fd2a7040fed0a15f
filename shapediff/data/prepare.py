"""Convert raw ShapeNetCore.v2 meshes into PointFlow's PC15k layout (plus optional caches).

``prepare_pc15k(source, output)`` samples 15,000 points uniformly over each
``<synset>/<model>/models/model_normalized.obj`` and writes ``output/<synset>/<split>/<model>.npy``
(float32 (15000, 3), ShapeNet's own normalised y-up frame, as PointFlow's archive). It runs in
parallel, writes every file atomically (temporary name, then ``os.replace``), skips outputs that
already exist whole (so a killed run resumes where it stopped; a truncated file is redone) and
returns every failed model with its reason. Optional caches beside ``output`` (never inside it, so PC15k loaders see only clouds):

- ``<output>.partial/<synset>/<split>/<model>.npz``: ``partial_views`` virtual depth scans
  (:func:`shapediff.geometry.virtual_scan`), arrays ``view_0``.. (M_i, 3) and ``viewpoints`` (V, 3);
- ``<output>.tsdf<R>/<synset>/<split>/<model>.npy``: a float32 (R, R, R) TSDF over (-1, 1)^3
  (:func:`shapediff.geometry.tsdf.tsdf_from_mesh`).
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shapediff.data._common import check_ratios, check_seed, split_of, stable_fraction
from shapediff.geometry.validation import check_positive_int
from shapediff.data.meshes import find_shapenet_models, sample_surface
from shapediff.geometry import load_mesh
from shapediff.io_atomic import write_atomic


@dataclass
class PrepareReport:
    """What :func:`prepare_pc15k` did: counts, every failure and every degenerate TSDF as (mesh path, reason).

    A model whose TSDF grid cannot describe a solid (no inside sample: walls thinner than a voxel, an open or
    inconsistently oriented mesh; see :func:`shapediff.geometry.tsdf.tsdf_problem`) is *degenerate*: its other
    outputs are written, its TSDF is not (a TSDF loader never meets it), and it is not counted as written.
    """

    written: int = 0
    skipped_existing: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    degenerate: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"written {self.written}, already present {self.skipped_existing}, failed {len(self.failed)}"
                 + (f", degenerate TSDF (not written) {len(self.degenerate)}" if self.degenerate else "")]
        lines += [f"  FAILED {path}: {reason}" for path, reason in self.failed]
        lines += [f"  DEGENERATE TSDF {path}: {reason}" for path, reason in self.degenerate]
        return "\n".join(lines)

    def problems(self) -> list[tuple[str, str]]:
        """Every model that did not get all its outputs, as (mesh path, reason), failures first."""
        return self.failed + [(path, f"degenerate TSDF (not written): {reason}") for path, reason in self.degenerate]


@dataclass(frozen=True)
class _Job:
    mesh_path: str
    model_id: str
    outputs: dict  # kind -> output path (str)
    num_points: int
    seed: int
    partial_views: int
    tsdf_resolution: int


def save_array_atomic(path: str | Path, array: np.ndarray | dict[str, np.ndarray]) -> Path:
    """np.save ``array`` (np.savez_compressed a dict of arrays, for .npz) to ``path`` atomically."""
    path = Path(path)
    writer = np.savez_compressed if path.suffix == ".npz" else np.save
    return write_atomic(path, lambda fh: writer(fh, **array) if isinstance(array, dict) else writer(fh, array), "array")


def is_complete_array_file(path: Path) -> bool:
    """Whether ``path`` is a whole .npy (header intact, size = header + data) or a whole .npz (every
    member's CRC checks). A resumed run redoes outputs that fail this, e.g. a file truncated by a
    crash of the file system or of an older, non-atomic writer."""
    try:
        if path.suffix == ".npz":
            with zipfile.ZipFile(path) as archive:
                return archive.testzip() is None
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(fh)
            return os.fstat(fh.fileno()).st_size == fh.tell() + int(np.prod(shape)) * dtype.itemsize
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def _partial_scans(mesh, views: int, seed: int) -> dict:
    from shapediff.geometry import virtual_scan

    scans = [virtual_scan(mesh, seed=seed + v) for v in range(views)]
    out = {f"view_{v}": s.points.numpy() for v, s in enumerate(scans)}
    out["viewpoints"] = np.stack([np.asarray(s.viewpoint, dtype=np.float32) for s in scans])
    return out


def _run_job(job: _Job) -> tuple[str, str, str]:
    """("ok" | "degenerate" | "failed", mesh path, reason); never raises, so one bad model cannot stop the run."""
    try:
        mesh = load_mesh(job.mesh_path)
        if "points" in job.outputs:
            pts = sample_surface(mesh, job.num_points, seed=job.seed)
            if not np.isfinite(pts).all():
                raise ValueError("sampled points hold NaN/Inf (mesh vertices are not finite)")
            save_array_atomic(job.outputs["points"], pts)
        if "partial" in job.outputs:
            save_array_atomic(job.outputs["partial"], _partial_scans(mesh, job.partial_views, job.seed))
        if "tsdf" in job.outputs:
            from shapediff.geometry.tsdf import tsdf_from_mesh, tsdf_problem

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a degenerate grid is reported below, once, with the model's path
                grid = tsdf_from_mesh(mesh, job.tsdf_resolution)
            problem = tsdf_problem(grid)
            if problem is not None:
                return "degenerate", job.mesh_path, f"R={job.tsdf_resolution}: {problem}"
            save_array_atomic(job.outputs["tsdf"], grid.numpy())
        return "ok", job.mesh_path, ""
    except Exception as err:  # reported at the end with the model's path
        return "failed", job.mesh_path, f"{type(err).__name__}: {err}"


def _make_jobs(models, output: Path, ratios, num_points, seed, partial_views, tsdf_resolution):
    jobs, present = [], 0
    for synset, model_id, path in models:
        rel = Path(synset) / split_of(model_id, ratios) / model_id
        wanted = {"points": output / rel.with_suffix(".npy")}
        if partial_views:
            wanted["partial"] = output.with_name(output.name + ".partial") / rel.with_suffix(".npz")
        if tsdf_resolution:
            wanted["tsdf"] = output.with_name(f"{output.name}.tsdf{tsdf_resolution}") / rel.with_suffix(".npy")
        todo = {k: str(v) for k, v in wanted.items() if not is_complete_array_file(v)}
        if not todo:
            present += 1
            continue
        model_seed = (int(stable_fraction(model_id) * 2**62) + seed) % 2**63
        jobs.append(_Job(str(path), model_id, todo, num_points, model_seed, partial_views, tsdf_resolution))
    return jobs, present


def prepare_pc15k(
    source: str | Path,
    output: str | Path,
    categories: Sequence[str] | str | None = None,
    num_points: int = 15000,
    split_ratios: Sequence[float] = (0.85, 0.05, 0.10),
    workers: int | None = None,
    seed: int = 0,
    partial_views: int = 0,
    tsdf_resolution: int = 0,
    progress: bool = True,
    on_result: Callable[[str, str, str], None] | None = None,
) -> PrepareReport:
    """Convert ShapeNetCore.v2 under ``source`` into ``output`` (the PC15k folder); see the module docstring.

    Splits are a hash of the model id (the same rule as :class:`ShapeNetCoreMeshes`). Models whose TSDF is
    degenerate are listed in ``report.degenerate``, not counted as written (see :class:`PrepareReport`). ``workers``:
    processes (None: all CPUs; 1: in this process). ``on_result(status, path, reason)`` is called
    per finished model (in the parent process).
    """
    num_points = check_positive_int(num_points, "num_points")
    ratios, seed = check_ratios(split_ratios), check_seed(seed)
    for name, value in (("partial_views", partial_views), ("tsdf_resolution", tsdf_resolution)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: expected a non-negative int (0 = off), got {value!r}")
    models = find_shapenet_models(source, categories)
    output = Path(output).expanduser()
    output.mkdir(parents=True, exist_ok=True)
    jobs, present = _make_jobs(models, output, ratios, num_points, seed, partial_views, tsdf_resolution)
    report = PrepareReport(skipped_existing=present)
    workers = (os.cpu_count() or 1) if workers is None else check_positive_int(workers, "workers")
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc="prepare_shapenet", unit="model", disable=not progress or not jobs)
    for status, path, reason in _results(jobs, workers):
        report.written += status == "ok"
        if status != "ok":
            (report.degenerate if status == "degenerate" else report.failed).append((path, reason))
        if on_result is not None:
            on_result(status, path, reason)
        bar.update(1)
    bar.close()
    report.failed.sort()
    report.degenerate.sort()
    return report


def _results(jobs: list[_Job], workers: int):
    if workers == 1 or len(jobs) <= 1:
        yield from map(_run_job, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for future in as_completed([pool.submit(_run_job, job) for job in jobs]):
            yield future.result()
