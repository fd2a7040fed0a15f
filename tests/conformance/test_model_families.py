"""The model-family conformance suite: every ``ShapeModel`` family passes the same checks, at tiny sizes.

A family is one :class:`Family` case: a factory of a tiny model (fitted where it needs statistics, untrained), what
``complete`` takes (or None: the family refuses completion) and which scripts it is expected to refuse. Checks:

- ``sample(n)`` returns :class:`shapediff.models.Samples` laid out (n, ...) and takes the common keywords
  (``seed``, ``steps``, ``sampler``, ``batch_size``, ``progress``); one seed gives one result, another seed another;
- ``save_pretrained`` -> ``load_model`` and ``save`` -> ``load_model`` give a model that samples the same, equal;
- ``complete`` gives the (B, n, ...) layout, or refuses in one line (``require_completion``);
- ``scripts/sample.py``, ``complete.py``, ``evaluate.py`` and ``view.py --out x.png`` run on its model directory
  (in-process, through each script's ``main(argv)`` under ``shapediff.cli.run_main``), or refuse with one
  ``error:`` line and exit status 2;
- a model of the family saved by an older shapediff (``tests/conformance/family_fixtures.py``: main @ f4c0c39)
  loads and draws the samples that code drew, bit for bit.

A new family joins by adding one ``FAMILIES`` entry.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

import shapediff
from shapediff.cli import USER_ERROR, run_main
from shapediff.models import LatentVoxelDiffusion, PointCloudDiffusion, PointEDiffusion, Samples, ShapeModel

ROOT = Path(__file__).resolve().parents[2]
N, M = 64, 16  # points per cloud, partial points of the completion family
GAUSSIAN = {"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 50}
POINTNET = {"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 16, "depth": 1, "time_embed_dim": 16}
DATA = {"_target_": "shapediff.data.SyntheticShapes", "categories": ["sphere", "box"], "num_shapes": 8,
        "num_points": N, "pool_size": 400, "mesh_resolution": 32}


def _data(split: str = "train"):
    from shapediff.config import instantiate

    return instantiate(DATA, split=split)


def _point() -> ShapeModel:
    model = PointCloudDiffusion(POINTNET, GAUSSIAN, num_points=N, num_partial_points=M, sampler={"name": "ddim", "steps": 3})
    model.prepare(_data())
    return model


def _two_level() -> ShapeModel:
    """Two-level (shape summary + points) and class-conditional: the quickstart's composition."""
    model = PointCloudDiffusion({**POINTNET, "num_classes": 2, "cond_drop_prob": 0.1}, GAUSSIAN, num_points=N,
                                class_conditional=True, sampler={"name": "ddim", "steps": 3},
                                shape_summary={"num_fourier": 4, "steps": 2, "prior": {"width": 16, "depth": 1}})
    model.prepare(_data())
    return model


def _completion() -> ShapeModel:
    """PVD completion: the first M points are the partial scan (the known-indicator wrapper marks them)."""
    denoiser = {"_target_": "shapediff.models.completion.KnownIndicatorDenoiser", "num_known": M,
                "denoiser": {**POINTNET, "in_channels": 4}}
    model = PointCloudDiffusion(denoiser, GAUSSIAN, num_points=N, completion="pvd", num_partial_points=M,
                                sampler={"name": "ddpm", "steps": 3})
    model.fit_normalization(_data())
    return model


def _latent_voxel() -> ShapeModel:
    """16^3 TSDF VAE with 2 x 8^3 latents and a tiny 3D UNet; the latent scale given (no data to fit it on)."""
    vae = {"_target_": "shapediff.autoencoders.TSDFVAE", "resolution": 16, "base_channels": 4, "channel_mult": [1, 2],
           "latent_channels": 2, "num_heads": 2, "num_groups": 4}
    unet = {"_target_": "shapediff.denoisers.UNet3D", "in_channels": 2, "resolution": 8, "base_channels": 8,
            "channel_mult": [1, 2], "attention_levels": [1], "num_heads": 2, "num_groups": 4}
    return LatentVoxelDiffusion(unet, GAUSSIAN, vae=vae, grid={"resolution": 16, "truncation": 2.0}, latent_scale=1.0,
                                latent_shift=0.0, sampler={"name": "ddim", "steps": 3}, num_points=N)


def _pointe() -> ShapeModel:
    """Point-E's base transformer at fixture size, configured by the converter (``pointe_model_config``)."""
    from shapediff.convert.pointe import pointe_model_config

    cfg = pointe_model_config({"name": "PointDiffusionTransformer", "width": 16, "layers": 1, "heads": 2, "n_ctx": N,
                               "input_channels": 6, "output_channels": 12})
    cfg["sampler"]["steps"] = 3
    return PointEDiffusion(**cfg)


def _lion() -> ShapeModel:
    """LION's composition (VAE + global prior + latent-point prior) with two-stage PVCNNs of 8 / 16 channels."""
    from shapediff.models import LionModel

    sa = [[[8, 1, 8], [16, 0.4, 8, [8, 16]]], [None, [4, 0.8, 8, [16, 16]]]]
    fp = [[[16, 16], None], [[16, 8], [8, 1, 8]]]
    model = LionModel(vae={"style_dim": 8, "num_points": N, "head_channels": 8, "style_sa_blocks": sa[:1],
                           "sa_blocks": sa, "fp_blocks": fp},
                      global_prior={"channels": 16, "num_blocks": 1, "embed_dim": 16},
                      local_prior={"embed_dim": 16, "head_channels": 8, "sa_blocks": sa, "fp_blocks": fp},
                      diffusion={"num_timesteps": 50}, sampler={"name": "ddpm", "steps": 3})
    model.prepare(_data())
    return model


def _scan_points(b: int = 2) -> list[torch.Tensor]:
    """B partial scans (M, 3): the upper halves of training clouds."""
    data = _data()
    return [data[i]["points"][data[i]["points"][:, 1] > data[i]["points"][:, 1].median()][:M] for i in range(b)]


def _tsdf_partial(model: LatentVoxelDiffusion, b: int = 2) -> tuple[tuple, dict]:
    r = model.vae.resolution
    axis = torch.linspace(-1, 1, r)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    tsdf = ((x**2 + y**2 + z**2).sqrt() - 0.6).clamp(-1, 1).expand(b, r, r, r).clone()
    mask = (x < 0).expand(b, r, r, r).clone()
    return (tsdf,), {"mask": mask, "refine_steps": 1, "refine_feature_steps": 1, "resample_jumps": 1}


@dataclass(frozen=True)
class Family:
    """One model family: a factory of a tiny model and what the shared checks expect of it.

    complete_args: (model) -> (args, kwargs) of a ``complete`` call on B = 2 inputs, or None: ``complete`` refuses.
    other_sampler: a sampler of its objective other than its default (the ``sampler`` keyword is honoured).
    refuses: scripts expected to answer with one ``error:`` line (exit status 2) instead of outputs.
    """

    name: str
    build: Callable[[], ShapeModel]
    complete_args: Callable[[Any], tuple[tuple, dict]] | None = None
    other_sampler: str = "ddpm"
    refuses: frozenset[str] = field(default_factory=frozenset)


FAMILIES = [
    Family("point", _point, complete_args=lambda m: ((_scan_points(),), {"method": "training_free", "resample_jumps": 1})),
    Family("two_level_point", _two_level, refuses=frozenset({"complete"})),
    Family("completion", _completion, complete_args=lambda m: ((_scan_points(),), {})),
    Family("latent_voxel", _latent_voxel, complete_args=_tsdf_partial, refuses=frozenset({"complete"})),
    Family("pointe", _pointe, other_sampler="ddim", refuses=frozenset({"complete"})),
    Family("lion", _lion, other_sampler="dpmpp_2m", refuses=frozenset({"complete"})),
]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module", params=FAMILIES, ids=lambda f: f.name)
def family(request) -> tuple[Family, ShapeModel]:
    torch.manual_seed(0)
    return request.param, request.param.build().eval()


@pytest.fixture(scope="module")
def model_dir(family, tmp_path_factory) -> Path:
    """The family's model saved as a directory with a run config whose ``data`` node scripts/evaluate.py reads."""
    directory = tmp_path_factory.mktemp(family[0].name) / "model"
    family[1].save_pretrained(directory, run_config={"data": DATA})
    return directory


def _layout(samples: Samples, lead: tuple[int, ...]) -> None:
    """Every field that is set has the leading dims ``lead``: (n,) for sample, (B, n) for complete."""
    assert isinstance(samples, Samples)
    assert samples.points is not None or samples.meshes is not None or samples.grids is not None
    if samples.points is not None:
        assert samples.points.shape[: len(lead)] == lead and samples.points.shape[-1] == 3
        assert torch.isfinite(samples.points).all()
    if samples.grids is not None:
        assert samples.grids.shape[: len(lead)] == lead
    if samples.meshes:
        rows = samples.meshes if len(lead) == 2 else [samples.meshes]
        assert [len(r) for r in rows] == [lead[-1]] * len(rows) and len(rows) == (lead[0] if len(lead) == 2 else 1)


def _same(a: Samples, b: Samples) -> bool:
    return all((x is None and y is None) or torch.equal(x, y) for x, y in ((a.points, b.points), (a.grids, b.grids)))


def test_sample_layout_and_common_keywords(family):
    fam, model = family
    out = model.sample(3, seed=0, steps=2, batch_size=2, progress=False)
    _layout(out, (3,))
    assert len(out) == 3
    points = out.points_on_surface(32, seed=0)
    assert points.shape[0] == 3 and points.shape[-1] == 3
    _layout(model.sample(2, seed=0, steps=2, sampler=fam.other_sampler), (2,))


def test_one_seed_one_result(family):
    _, model = family
    a, b, c = (model.sample(2, seed=s, steps=2) for s in (1, 1, 2))
    assert _same(a, b) and not _same(a, c)


def test_round_trips_through_a_directory_and_a_checkpoint(family, model_dir, tmp_path):
    _, model = family
    expected = model.sample(2, seed=5, steps=2)
    for saved in (model_dir, model.save(tmp_path / "model.pt")):
        loaded = shapediff.load_model(saved, device="cpu")
        assert type(loaded) is type(model) and loaded.config == model.config
        assert _same(loaded.sample(2, seed=5, steps=2), expected), saved


def test_complete_layout_or_one_line_refusal(family):
    fam, model = family
    if fam.complete_args is None:
        for refusal in (lambda: model.require_completion("points"), lambda: model.complete(_scan_points(), n=2)):
            with pytest.raises((ValueError, NotImplementedError)) as err:
                refusal()
            assert "\n" not in str(err.value) and str(err.value)
        return
    args, kwargs = fam.complete_args(model)
    out = model.complete(*args, n=2, seed=0, steps=2, **kwargs)
    _layout(out, (2, 2))


@pytest.mark.parametrize("name", ["point", "two_level_point", "completion", "tokens_completion", "latent_voxel",
                                  "pointe"])
def test_models_saved_by_older_code_load_with_the_same_samples(name):
    from tests.conformance.family_fixtures import FIXTURES, SAMPLE

    saved = FIXTURES / name if (FIXTURES / name).is_dir() else FIXTURES / f"{name}.pt"
    model = shapediff.load_model(saved, device="cpu")
    out = model.sample(SAMPLE["n"], seed=SAMPLE["seed"], steps=SAMPLE["steps"])
    # Bit-equal on the machine that saved them; another CPU's kernels (AVX2 vs AVX-512) round float32 convolutions
    # differently: 2e-7 on the latent-voxel grids (an AMD EPYC with AVX2, 2026-12-06). Far below any change of code.
    for key, expected in torch.load(FIXTURES / f"{name}.expected.pt", weights_only=True).items():
        torch.testing.assert_close(getattr(out, key), expected, rtol=1e-5, atol=1e-6, msg=key)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(capsys, name: str, *argv: Any) -> tuple[int, str]:
    """scripts/<name>.py's main(argv) under the one-line error wrapper -> (exit status, stderr)."""
    capsys.readouterr()
    code = run_main(lambda: _script(name).main([str(a) for a in argv]))
    return code, capsys.readouterr().err


def _check(fam: Family, script: str, code: int, err: str) -> None:
    if script in fam.refuses:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert code == USER_ERROR and len(lines) == 1 and lines[0].startswith("error: "), err
    else:
        assert code == 0, err[-2000:]


def test_scripts_run_or_refuse_in_one_line(family, model_dir, tmp_path, capsys):
    fam, model = family
    out = tmp_path / "samples"
    code, err = _run(capsys, "sample", model_dir, "--n", 2, "--steps", 2, "--num-points", 32, "--device", "cpu",
                     "--out", out, "--no-preview")
    _check(fam, "sample", code, err)
    clouds = torch.load(out / "samples.pt", weights_only=True)
    assert clouds.shape[0] == 2 and clouds.shape[-1] == 3 and (out / "sample_001.ply").is_file()
    if isinstance(model, LatentVoxelDiffusion):  # surfaces: the meshes are written, the clouds drawn on them
        assert clouds.shape[1] == 32 and (out / "sample_000.obj").is_file() and (out / "sample_001.obj").is_file()
    code, err = _run(capsys, "view", out, "--out", tmp_path / "x.png", "--size", 64)
    _check(fam, "view", code, err)
    assert (tmp_path / "x.png").is_file()
    code, err = _run(capsys, "view", model_dir, "--out", tmp_path / "y.png")  # weights, not shapes: one line
    _check(Family("", fam.build, refuses=frozenset({"view"})), "view", code, err)
    code, err = _run(capsys, "sample", model_dir, "--n", 1, "--steps", 2, "--class-label", 0, "--device", "cpu",
                     "--out", tmp_path / "labelled", "--no-preview")
    _check(fam if "class_label" in model.conditions else Family("", fam.build, refuses=frozenset({"sample"})),
           "sample", code, err)

    scan = tmp_path / "scan.npy"
    import numpy as np

    np.save(scan, _scan_points(1)[0].numpy())
    code, err = _run(capsys, "complete", model_dir, scan, "--n", 1, "--steps", 2, "--resample-jumps", 1,
                     "--device", "cpu", "--out", tmp_path / "completions", "--no-mesh", "--no-preview")
    _check(fam, "complete", code, err)
    if "complete" not in fam.refuses:
        assert (tmp_path / "completions" / "scan" / "completion_0.ply").is_file()

    code, err = _run(capsys, "evaluate", model_dir, "--n", 2, "--steps", 2, "--metrics", "cd", "--device", "cpu",
                     "--out", tmp_path / "m.json")
    _check(fam, "evaluate", code, err)
    if "evaluate" not in fam.refuses:
        assert (tmp_path / "m.json").is_file()
