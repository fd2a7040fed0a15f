"""The denoiser conformance suite: every network in ``shapediff.denoisers`` passes all of it, at tiny sizes.

A denoiser is ``forward(x_t, t, cond=None) -> like x_t`` (docs/architecture.md). Checks: the output has the
input's shape and is finite; permuting the points permutes the output, where the network claims it (set
networks; the known-indicator wrapper within the known and within the generated points); a loss reaches every
parameter; 40 Adam steps on one shape lower the diffusion loss on fixed (t, noise) pairs at least 2x; a state
dict saved and loaded (``weights_only``) gives the same outputs; two builds from one seed are identical and
eval-mode calls repeat exactly. A new denoiser is one ``CASES`` entry.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from shapediff.config import instantiate
from shapediff.denoisers import (PVCNN2, KnownIndicatorDenoiser, PointETransformer, PointNetDenoiser, PointTransformer, UNet3D,
                                 VectorMLPDenoiser)
from shapediff.diffusion import GaussianDiffusion

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"
N, M = 64, 16  # points per cloud; known (partial-scan) points for the known-indicator wrapper


def _torus(n: int = N, seed: int = 0) -> torch.Tensor:
    """(n, 3) points on a torus (radii 1 and 0.4)."""
    g = torch.Generator().manual_seed(seed)
    u, v = torch.rand(n, generator=g) * 2 * math.pi, torch.rand(n, generator=g) * 2 * math.pi
    r = 1 + 0.4 * torch.cos(v)
    return torch.stack([r * torch.cos(u), r * torch.sin(u), 0.4 * torch.sin(v)], dim=1)


def _grid(channels: int = 2, r: int = 8) -> torch.Tensor:
    """(channels, r, r, r) smooth field: the latent-voxel layout UNet3D denoises."""
    axis = torch.linspace(-1, 1, r)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([torch.sin(2 * x + c) * torch.cos(y - z) for c in range(channels)])


def _pvd_layout() -> nn.Module:
    """configs/model/pvcnn_pvd.yaml (PVD's 4-stage layout and point ops) at half its width (the first stage's SE
    keeps 2 hidden ReLU units; at a quarter its one unit can be dead for every input) and a quarter resolution."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / "pvcnn_pvd.yaml"))
    cfg.update(width_multiplier=0.5, voxel_resolution_multiplier=0.25, dropout=0.0, head_dropout=0.0,
               head_channels=64, embed_dim=16)
    return instantiate(cfg)


def _vector(dim: int = 8) -> torch.Tensor:
    """(dim,) a fixed vector: what VectorMLPDenoiser denoises (a shape summary)."""
    return torch.linspace(-1.5, 1.5, dim) ** 3


class _GivenSummary(nn.Module):
    """A denoiser built with ``summary_dim`` called as ``net(x, t)``: each call gets a fixed (D,) summary per example."""

    def __init__(self, net: nn.Module, dim: int = 4):
        super().__init__()
        self.net = net
        self.register_buffer("summary", torch.linspace(-1, 1, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        return self.net(x, t, {**(cond or {}), "summary": self.summary.expand(x.shape[0], -1)})


def _all_points(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=g)


def _within_known_and_rest(n: int, g: torch.Generator) -> torch.Tensor:
    """A permutation that keeps the first M points first: what the known-indicator wrapper is equivariant to."""
    return torch.cat([torch.randperm(M, generator=g), M + torch.randperm(n - M, generator=g)])


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    shape: Callable[[], torch.Tensor]  # one clean example, without the batch dimension
    permutation: Callable[[int, torch.Generator], torch.Tensor] | None = None  # None: no equivariance claimed
    overfit_lr: float = 3e-3
    slow_overfit: bool = False  # a step takes seconds on a shared 2-core CPU: its overfit test is marked slow


PVCNN_SMALL = dict(embed_dim=16, head_channels=32, dropout=0.0, head_dropout=0.0, point_ops="plain",
                   sa_blocks=[((16, 1, 8), (32, 0.3, 16, (16, 32))), (None, (8, 0.8, 16, (32, 32)))],
                   fp_blocks=[((32,), (16, 1, 4)), ((32, 32), (16, 1, 8))])
CASES = {
    "pointnet": Case(lambda: PointNetDenoiser(width=32, depth=2, time_embed_dim=16), _torus, _all_points),
    "pvcnn_small": Case(lambda: PVCNN2(**PVCNN_SMALL), _torus),  # FPS starts at the first point: not equivariant
    "pointnet_summary": Case(lambda: _GivenSummary(PointNetDenoiser(width=32, depth=2, time_embed_dim=16, summary_dim=4)),
                             _torus, _all_points),
    "vector_mlp": Case(lambda: VectorMLPDenoiser(dim=8, width=32, depth=2, time_embed_dim=16), _vector, overfit_lr=1e-2),
    "pvcnn_pvd_layout": Case(_pvd_layout, _torus, slow_overfit=True),
    "pointe_transformer": Case(lambda: PointETransformer(in_channels=3, out_channels=3, width=32, layers=2, heads=4),
                               _torus, _all_points),
    "transformer": Case(lambda: PointTransformer(width=32, depth=2, heads=4, time_embed_dim=32), _torus, _all_points),
    "unet3d": Case(lambda: UNet3D(in_channels=2, resolution=8, base_channels=8, num_groups=4, num_heads=2), _grid),
    "known_indicator": Case(lambda: KnownIndicatorDenoiser(PointNetDenoiser(in_channels=4, width=32, depth=2,
                                                                            time_embed_dim=16), num_known=M),
                            _torus, _within_known_and_rest),
    "known_indicator_scan_code": Case(lambda: KnownIndicatorDenoiser(
        PointNetDenoiser(in_channels=4, width=32, depth=2, time_embed_dim=16, summary_dim=8), num_known=M, scan_code=8),
        _torus, _within_known_and_rest),
}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _build(case: Case, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return case.build()


def _randomise(net: nn.Module, seed: int = 1, std: float = 0.05) -> nn.Module:
    """Perturb every parameter: zero-initialised output heads would make equality and gradient checks vacuous."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))
    return net


def _inputs(case: Case, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x0 = case.shape()
    x = x0 + 0.3 * torch.randn((batch, *x0.shape), generator=g)
    return x, torch.randint(0, 1000, (batch,), generator=g)


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_is_shaped_like_the_input_and_finite(name):
    net = _build(CASES[name]).eval()
    x, t = _inputs(CASES[name])
    out = net(x, t)
    assert out.shape == x.shape and out.dtype == x.dtype and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("name", sorted(CASES))
def test_permutation_equivariance_where_claimed(name):
    case = CASES[name]
    if case.permutation is None:
        pytest.skip(f"{name} claims no permutation equivariance")
    net = _randomise(_build(case)).eval()
    x, t = _inputs(case)
    perm = case.permutation(x.shape[1], torch.Generator().manual_seed(5))
    out = net(x, t)
    assert out.abs().max() > 1e-3  # not trivially equivariant
    torch.testing.assert_close(net(x[:, perm], t), out[:, perm], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_reach_every_parameter(name):
    net = _randomise(_build(CASES[name])).train()
    x, t = _inputs(CASES[name], batch=4)  # varied inputs: a 1-unit ReLU (SE at tiny width) is not dead on all
    out = net(x, t)
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(3))).sum().backward()
    missing = [k for k, p in net.named_parameters() if p.grad is None or not bool(p.grad.abs().gt(0).any())]
    assert not missing, f"{name}: no gradient reaches {missing}"


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if CASES[n].slow_overfit else n
                                  for n in sorted(CASES)])
def test_overfits_one_shape(name):
    case = CASES[name]
    net, diffusion = _build(case).train(), GaussianDiffusion("linear", 1000)
    x0, g = case.shape()[None], torch.Generator().manual_seed(1)
    t_eval = torch.linspace(0, 999, 12).long()
    noise_eval = torch.randn((12, *x0.shape[1:]), generator=g)

    def eval_loss() -> float:
        with torch.no_grad():
            return diffusion.training_loss(net, x0.expand(12, *x0.shape[1:]), t=t_eval, noise=noise_eval).item()

    before = eval_loss()
    opt = torch.optim.Adam(net.parameters(), lr=case.overfit_lr)
    for _ in range(40):
        loss = diffusion.training_loss(net, x0.expand(4, *x0.shape[1:]), generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < before / 2, f"{name}: eps-MSE {before:.3f} -> {after:.3f}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_round_trip_gives_the_same_outputs(name):
    net = _randomise(_build(CASES[name], seed=0)).eval()
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    other = _build(CASES[name], seed=7).eval()
    other.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    x, t = _inputs(CASES[name])
    out = net(x, t)
    assert out.abs().max() > 1e-3 and torch.equal(other(x, t), out)


@pytest.mark.parametrize("name", sorted(CASES))
def test_determinism(name):
    a, b = _build(CASES[name], seed=0).eval(), _build(CASES[name], seed=0).eval()
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    _randomise(a), _randomise(b)
    x, t = _inputs(CASES[name])
    assert torch.equal(a(x, t), a(x, t)) and torch.equal(a(x, t), b(x, t))
