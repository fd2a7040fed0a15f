"""GaussianDiffusion.sample: known values (PVD / RePaint), guidance, determinism, validation, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from shapediff.config import instantiate
from shapediff.diffusion import FlowMatching, GaussianDiffusion
from shapediff.diffusion.samplers import REGISTRY, check_sampler
from tests.diffusion.analytic import (ConditionalGaussianDenoiser, assert_close, gaussian_denoiser, moment_tolerances,
                                      sample_moments)
from tests.conformance.toys import Toy
from tests.diffusion.test_samplers_analytic import COV, MU

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion("linear", 100)


@pytest.mark.parametrize("sampler,steps", [("dpmpp_2m", 20), ("ddpm", None)])
def test_clean_known_values_with_pvd_optimal_model_sample_the_conditional(sampler, steps):
    """A PVD-trained optimal model + keep_known="clean" samples x_u | x_k exactly (up to MC and bias)."""
    d = GaussianDiffusion("linear", 1000)
    known_dims = torch.tensor([True, False, False])
    model = ConditionalGaussianDenoiser(d.alphas_cumprod, "eps", MU, COV, known_dims)
    n = 2000
    g = torch.Generator().manual_seed(5)
    known = torch.zeros(n, 3, dtype=torch.float64)
    known[:, 0] = MU[0] + COV[0, 0].sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
    x = d.sample(model, (n, 3), sampler=sampler, steps=steps, seed=0, known=known, mask=known_dims)
    assert torch.equal(x[:, 0], known[:, 0])
    residual = x[:, 1:] - (MU[1:] + (known[:, :1] - MU[0]) @ model.reg.T)  # x_u - m_c(x_k) ~ N(0, S_c)
    mean_tol, cov_tol = moment_tolerances(model.cond_cov, n)
    m, c = sample_moments(residual)
    assert bool((m.abs() <= mean_tol + 0.01).all()), m
    assert bool(((c - model.cond_cov).abs() <= cov_tol + 0.035).all()), (c, model.cond_cov)


def test_repaint_resampling_converges_to_the_conditional():
    """Unconditional optimal model + keep_known="noised": without resampling RePaint is biased; with
    10 jumps per step the inpainted dims match the Gaussian conditional within Monte Carlo error."""
    d = GaussianDiffusion("linear", 1000)
    model = gaussian_denoiser(d.alphas_cumprod, "eps", MU, COV)
    n, k0 = 2000, 1.5
    mean_c = MU[1:] + COV[1:, 0] / COV[0, 0] * (k0 - MU[0])
    cov_c = COV[1:, 1:] - COV[1:, :1] @ COV[:1, 1:] / COV[0, 0]
    known = torch.full((n, 3), k0, dtype=torch.float64)
    mask = torch.tensor([True, False, False])
    kw = dict(sampler="dpmpp_2m", steps=50, seed=0, known=known, mask=mask, keep_known="noised")
    mean_tol, cov_tol = moment_tolerances(cov_c, n)
    m1, _ = sample_moments(d.sample(model, (n, 3), resample_jumps=1, **kw)[:, 1:])
    assert (m1 - mean_c).abs().max() > 2 * mean_tol.max()  # RePaint's known bias without resampling
    m10, c10 = sample_moments(d.sample(model, (n, 3), resample_jumps=10, **kw)[:, 1:])
    assert bool(((m10 - mean_c).abs() <= mean_tol + 0.01).all()), (m10, mean_c)
    assert bool(((c10 - cov_c).abs() <= cov_tol + 0.035).all()), (c10, cov_c)


def test_classifier_free_guidance(diffusion):
    model = Toy()
    cond = torch.tensor([0.5, -1.0])
    kw = dict(sampler="ddim", steps=5, seed=3)
    conditional = diffusion.sample(model, (2, 4, 3), cond=cond, **kw)
    assert torch.equal(diffusion.sample(model, (2, 4, 3), cond=cond, guidance_scale=1.0, **kw), conditional)
    assert torch.equal(diffusion.sample(model, (2, 4, 3), cond=cond, guidance_scale=None, **kw), conditional)
    model.calls.clear()
    guided = diffusion.sample(model, (2, 4, 3), cond=cond, guidance_scale=3.0, **kw)
    assert model.calls.count(None) == 5 and model.calls.count("cond") == 5

    def manual(x, t, c):
        u = model(x, t, None)
        return u + 3.0 * (model(x, t, cond) - u)

    assert_close(guided, diffusion.sample(manual, (2, 4, 3), **kw))
    assert not torch.allclose(guided, conditional)


def test_model_called_with_long_timesteps_from_the_spacing(diffusion):
    seen = []

    def model(x, t, cond):
        seen.append(t)
        return torch.zeros_like(x)

    diffusion.sample(model, (2, 3), sampler="ddpm", seed=0)
    assert len(seen) == 100 and all(t.dtype == torch.long and t.shape == (2,) for t in seen)
    assert [int(t[0]) for t in seen] == list(range(99, -1, -1))
    seen.clear()
    diffusion.sample(model, (2, 3), sampler="ddim", steps=4, seed=0)
    assert [int(t[0]) for t in seen] == [99, 66, 33, 0]
    for spacing in ("logsnr", "karras"):
        seen.clear()
        diffusion.sample(model, (2, 3), sampler="dpmpp_2m", steps=100, spacing=spacing, seed=0)
        assert [int(t[0]) for t in seen] == list(range(99, -1, -1))  # every step once, descending


def test_progress_bar(diffusion, capsys):
    diffusion.sample(Toy(), (1, 2, 3), sampler="ddim", steps=3, seed=0, progress=True)
    assert "sampling" in capsys.readouterr().err
    diffusion.sample(Toy(), (1, 2, 3), sampler="ddim", steps=3, seed=0)
    assert "sampling" not in capsys.readouterr().err


def test_sample_validation(diffusion):
    model = Toy()
    with pytest.raises(ValueError, match=r"sampler: expected one of \['ddim', 'ddpm', 'dpmpp_2m', 'euler', 'heun', 'karras_heun'\], got 'plms'"):
        diffusion.sample(model, (1, 2, 3), sampler="plms")
    with pytest.raises(ValueError, match=r"steps: expected an int in \[1, 100\]"):
        diffusion.sample(model, (1, 2, 3), steps=101)
    with pytest.raises(ValueError, match="steps"):
        diffusion.sample(model, (1, 2, 3), steps=0)
    with pytest.raises(ValueError, match="shape: expected a non-empty sequence of positive ints"):
        diffusion.sample(model, (0, 2, 3))
    with pytest.raises(ValueError, match="known: expected a shape broadcastable to"):
        diffusion.sample(model, (1, 2, 3), known=torch.zeros(1, 4, 3), mask=torch.ones(1, 4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask: expected a bool tensor"):
        diffusion.sample(model, (1, 2, 3), known=torch.zeros(1, 2, 3), mask=torch.ones(1, 2, 3))
    with pytest.raises(ValueError, match="known, mask: give both or neither"):
        diffusion.sample(model, (1, 2, 3), known=torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="known: contains NaN"):
        diffusion.sample(model, (1, 2, 3), known=torch.full((1, 2, 3), float("nan")), mask=torch.ones(1, 2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="resample_jumps: values > 1 need"):
        diffusion.sample(model, (1, 2, 3), resample_jumps=3)
    with pytest.raises(ValueError, match="keep_known: expected one of"):
        diffusion.sample(model, (1, 2, 3), keep_known="repaint")
    with pytest.raises(ValueError, match="seed, generator: give at most one"):
        diffusion.sample(model, (1, 2, 3), seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="eta"):
        diffusion.sample(model, (1, 2, 3), eta=-0.1)
    with pytest.raises(ValueError, match="spacing"):
        diffusion.sample(model, (1, 2, 3), spacing="quadratic")
    with pytest.raises(ValueError, match="model: expected an output shaped like x_t"):
        diffusion.sample(lambda x, t, c: x[:, :1], (1, 2, 3))
    with pytest.raises(ValueError, match=r"noise: expected shape \(1, 2, 3\)"):
        diffusion.sample(model, (1, 2, 3), noise=torch.zeros(2, 3))


GAUSSIAN_CONFIGS = [p for p in sorted((CONFIGS / "diffusion").glob("*.yaml"))  # flow_matching: test_flow_matching.py
                    if yaml.safe_load(p.read_text()).get("_target_") == "shapediff.diffusion.GaussianDiffusion"]


@pytest.mark.parametrize("path", GAUSSIAN_CONFIGS, ids=lambda p: p.stem)
def test_diffusion_configs_instantiate(path):
    cfg = yaml.safe_load(path.read_text())
    diffusion = instantiate(cfg)
    assert isinstance(diffusion, GaussianDiffusion) and diffusion.num_timesteps == cfg["num_timesteps"]
    assert diffusion.schedule == cfg["schedule"] and diffusion.alphas_cumprod.shape == (cfg["num_timesteps"],)
    with pytest.raises(ValueError, match="unknown keyword"):
        instantiate({**cfg, "beta_stop": 0.1})


@pytest.mark.parametrize("path", sorted((CONFIGS / "sampler").glob("*.yaml")), ids=lambda p: p.stem)
def test_sampler_configs_run(path, diffusion):
    """Every configs/sampler/*.yaml runs on the process its sampler integrates, with no key left unused."""
    cfg = yaml.safe_load(path.read_text())
    if "flow" in REGISTRY[cfg["name"]].processes:
        diffusion = FlowMatching()
    assert {"name", "steps"} <= set(cfg)
    extra = {k: v for k, v in cfg.items() if k not in ("name", "steps")}
    check_sampler(diffusion.objective, cfg["name"], extra)  # nothing ignored: an unused key is an error
    steps = cfg["steps"] if cfg["steps"] is None else min(cfg["steps"], diffusion.num_timesteps)
    out = diffusion.sample(Toy(), (1, 4, 3), sampler=cfg["name"], steps=steps, seed=0, **extra)
    assert out.shape == (1, 4, 3)


def test_ddim_eta_reaches_the_sampler(diffusion):
    model = Toy()
    a = diffusion.sample(model, (2, 4, 3), sampler="ddim", steps=5, seed=0)
    assert torch.equal(a, diffusion.sample(model, (2, 4, 3), sampler="ddim", steps=5, seed=0, eta=0.0))
    assert not torch.allclose(a, diffusion.sample(model, (2, 4, 3), sampler="ddim", steps=5, seed=0, eta=1.0))
