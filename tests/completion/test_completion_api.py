"""Completion API: shapes, exactness of the kept partial points, what the denoiser sees, errors, baselines."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from torch import nn

from shapediff.models import PointCloudDiffusion
from shapediff.evaluation import baseline_mirror, baseline_partial, baseline_retrieval
from shapediff.models.completion import complete
from shapediff.models.partial_input import prepare_partial

N, M, T = 64, 16, 100


def _model(completion: str = "pvd", denoiser: dict | None = None) -> PointCloudDiffusion:
    model = PointCloudDiffusion(
        denoiser=denoiser or {"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 32, "depth": 2},
        diffusion={"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": T},
        num_points=N, completion=completion, num_partial_points=M,
    )
    # data coordinates far from the origin and not unit scale, so a missed (de)normalisation shows
    gen = torch.Generator().manual_seed(0)
    model.normalizer.fit([torch.randn(500, 3, generator=gen) * 3.0 + torch.tensor([10.0, -5.0, 2.0])])
    return model.eval()


class _Spy(nn.Module):
    """Wraps a denoiser and records every x_t and t it is called with."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x, t, cond=None):
        self.calls.append((x.clone(), t.clone(), cond))
        return self.inner(x, t, cond)


def _partial(b: int | None, m: int = M, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (m, 3) if b is None else (b, m, 3)
    return torch.randn(shape, generator=gen) * 3.0 + torch.tensor([10.0, -5.0, 2.0])


@pytest.mark.parametrize("method", ["pvd", "training_free"])
def test_output_shapes_and_exactly_kept_partial(method):
    model = _model("pvd" if method == "pvd" else "none")
    single = _partial(None)
    out = complete(model, single, n=3, steps=4, sampler="ddim", seed=0, method=method, resample_jumps=2)
    assert out.shape == (3, N, 3)
    assert torch.equal(out[:, :M], single.expand(3, M, 3))  # bit-exact, in data coordinates
    batch = _partial(2)
    out = model.complete(batch, n=2, steps=4, sampler="ddim", seed=0, method=method, resample_jumps=2).points
    assert out.shape == (2, 2, N, 3)
    assert torch.equal(out[:, :, :M], batch[:, None].expand(2, 2, M, 3))
    assert torch.isfinite(out).all()


def test_pvd_holds_the_clean_partial_in_every_denoiser_input():
    model = _model("pvd")
    spy = model.denoiser = _Spy(model.denoiser)
    partial = _partial(2)
    complete(model, partial, n=2, steps=6, sampler="ddpm", seed=3)
    assert len(spy.calls) == 6
    want = model.normalizer.normalize(partial).repeat_interleave(2, dim=0)
    for x, _, cond in spy.calls:
        assert cond is None
        assert torch.equal(x[:, :M], want)
    # the unknown points start as noise and move: not a copy of the partial
    assert not torch.allclose(spy.calls[0][0][:, M:], spy.calls[-1][0][:, M:])


def test_training_free_holds_the_noised_partial_with_resampling_jumps():
    model = _model("none")
    spy = model.denoiser = _Spy(model.denoiser)
    partial = _partial(4, m=M)
    steps, jumps = 5, 3
    complete(model, partial, n=4, steps=steps, sampler="ddpm", seed=0, resample_jumps=jumps)
    assert len(spy.calls) == steps * jumps  # RePaint: every step repeated `jumps` times
    abar = model.diffusion.alphas_cumprod
    x0 = model.normalizer.normalize(partial).repeat_interleave(4, dim=0).double()
    for x, t, _ in spy.calls:
        a = abar[int(t[0])]
        if a > 0.95:
            continue
        z = (x[:, :M].double() - a.sqrt() * x0) / (1 - a).sqrt()  # must be standard normal noise
        assert abs(z.mean().item()) < 0.15 and abs(z.std().item() - 1.0) < 0.1, (int(t[0]), z.mean(), z.std())


def test_tokens_method_passes_the_normalised_partial_as_condition():
    den = {"_target_": "shapediff.denoisers.PointTransformer", "width": 32, "depth": 1, "heads": 2,
           "partial_encoder": "tokens", "time_embed_dim": 32}
    model = _model("tokens", denoiser=den)
    spy = model.denoiser = _Spy(model.denoiser)
    partial = _partial(2, m=40)  # any M: resampled to the model's M
    out = model.complete(partial, n=3, steps=3, sampler="ddim", seed=0).points
    assert out.shape == (2, 3, N, 3)
    cond = spy.calls[0][2]
    assert cond["partial"].shape == (6, M, 3)
    # each conditioning row is the normalised input, resampled: every row point is an input point
    data = model.normalizer.denormalize(cond["partial"][0])
    d = torch.cdist(data.double(), partial[0].double()).min(dim=1).values
    assert d.max() < 1e-4


def test_any_number_of_partial_points_is_resampled_with_a_note(caplog):
    model = _model("pvd")
    big, small = _partial(None, m=300), _partial(None, m=5)
    with caplog.at_level(logging.INFO, logger="shapediff.models.partial_input"):
        out = complete(model, big, n=1, steps=2, sampler="ddim", seed=0)
    assert any("partial: resampling a cloud of 300 points" in r.getMessage() for r in caplog.records)
    kept = out[0, :M]
    assert torch.cdist(kept, big, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values.max() == 0
    assert torch.unique(kept, dim=0).shape[0] == M  # without replacement
    out = complete(model, small, n=1, steps=2, sampler="ddim", seed=0)
    assert torch.unique(out[0, :M], dim=0).shape[0] == 5  # all 5 kept, repeats fill to M
    ragged = complete(model, [big, small, np.asarray(big[:20])], n=2, steps=2, sampler="ddim", seed=0)
    assert ragged.shape == (3, 2, N, 3)


def test_completion_is_deterministic_by_seed():
    model = _model("pvd")
    partial = _partial(1, m=50)
    a = complete(model, partial, n=2, steps=3, sampler="ddpm", seed=5)
    b = complete(model, partial, n=2, steps=3, sampler="ddpm", seed=5)
    c = complete(model, partial, n=2, steps=3, sampler="ddpm", seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0, 0], a[0, 1])  # hypotheses of one scan differ


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(0, 3), "empty"),
        (torch.zeros(2, 0, 3), "empty"),
        (torch.zeros(0, 5, 3), "B >= 1"),
        (torch.tensor([[0.0, float("nan"), 1.0]] * 4), "NaN"),
        (torch.tensor([[0.0, float("inf"), 1.0]] * 4), "NaN or Inf"),
        (torch.zeros(5), r"\(M, 3\) or \(B, M, 3\)"),
        (torch.zeros(5, 2), r"got shape \(5, 2\)"),
        (torch.zeros(1, 2, 5, 3), r"got shape \(1, 2, 5, 3\)"),
        ([], "empty sequence"),
        ("scan.ply", "tensor or array"),
        (np.array([["a", "b", "c"]]), "numeric"),
    ],
)
def test_bad_partials_raise_clear_errors(bad, match):
    model = _model("pvd")
    with pytest.raises(ValueError, match=match):
        model.complete(bad, n=1, steps=2)


def test_bad_options_raise_clear_errors():
    model = _model("pvd")
    with pytest.raises(ValueError, match="n: expected"):
        model.complete(_partial(None), n=0)
    with pytest.raises(ValueError, match="method"):
        model.complete(_partial(None), method="magic")
    with pytest.raises(ValueError, match="resample_jumps"):
        model.complete(_partial(None), method="training_free", resample_jumps=0)
    with pytest.raises(ValueError, match="num_partial_points"):
        prepare_partial(_partial(None), 0)


def test_baseline_retrieval_matches_brute_force_one_sided_chamfer():
    gen = torch.Generator().manual_seed(0)
    train = torch.randn(9, 128, 3, generator=gen) * torch.rand(9, 1, 3, generator=gen) * 2
    scans = train[[2, 7, 4], :40] + 0.05 * torch.randn(3, 40, 3, generator=gen)
    clouds, idx = baseline_retrieval(scans, train, chunk=4)
    want = []
    for s in scans.double().numpy():
        costs = [np.mean(cKDTree(t).query(s)[0] ** 2) for t in train.double().numpy()]
        want.append(int(np.argmin(costs)))
    assert idx.tolist() == want
    assert torch.equal(clouds, train[idx])


def test_baseline_partial_and_mirror():
    gen = torch.Generator().manual_seed(0)
    partial = torch.rand(2, 30, 3, generator=gen) + 0.5  # all x > 0
    up = baseline_partial(partial, 100, gen)
    assert up.shape == (2, 100, 3)
    for b in range(2):
        assert torch.unique(up[b], dim=0).shape[0] == 30
    mir = baseline_mirror(partial, 100, axis=0, generator=gen)
    assert mir.shape == (2, 100, 3)
    assert (mir[..., 0] < 0).any() and (mir[..., 0] > 0).any()
    reflected = partial.clone()
    reflected[..., 0] *= -1
    both = torch.cat([partial, reflected], dim=1)
    for b in range(2):
        assert torch.cdist(mir[b], both[b], compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values.max() == 0
    with pytest.raises(ValueError, match="axis"):
        baseline_mirror(partial, 10, axis=3)


def test_pvd_from_an_initial_shape_starts_at_init_t_around_it():
    model = _model("pvd")
    spy = model.denoiser = _Spy(model.denoiser)
    partial = _partial(2)
    gen = torch.Generator().manual_seed(9)
    init = torch.randn(2, N - M, 3, generator=gen) * 3.0 + torch.tensor([10.0, -5.0, 2.0])
    out = complete(model, partial, n=3, steps=50, sampler="ddpm", seed=0, init=init, init_t=20)
    assert out.shape == (2, 3, N, 3) and torch.equal(out[:, :, :M], partial[:, None].expand(2, 3, M, 3))
    ts = [int(t[0]) for _, t, _ in spy.calls]
    assert ts[0] == 19 and len(ts) == 10  # 50 steps x 20 / T=100, starting at t = init_t - 1
    abar = model.diffusion.alphas_cumprod[19]
    x = spy.calls[0][0][:, M:].double()
    want = model.normalizer.normalize(init).repeat_interleave(3, dim=0).double() * abar.sqrt()
    z = (x - want) / (1 - abar).sqrt()
    assert abs(z.mean().item()) < 0.1 and abs(z.std().item() - 1) < 0.1
    with pytest.raises(ValueError, match="init"):
        complete(model, partial, n=1, steps=2, init=init[:1])
    with pytest.raises(ValueError, match="init_t"):
        complete(model, partial, n=1, steps=2, init=init, init_t=0)
