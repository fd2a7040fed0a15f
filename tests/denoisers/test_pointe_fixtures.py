"""Point-E's transformer, diffusion and Karras/Heun sampler against Point-E's own outputs.

Fixtures: ``../shared/data/anchor_fixtures/pointe_{base_uncond,upsample}_small.pt`` (Point-E's code run
on small random configs: forward outputs in float32 and float64, a 64-step deterministic Karras-Heun
run from saved noise with every model timestep and state; see the fixtures' README/SOURCE.txt).
"""

from __future__ import annotations

import pytest
import torch

from shapediff.convert.pointe import pointe_model_config
from shapediff.diffusion.karras_heun import karras_sigmas
from shapediff.models.pointe import PointEDiffusion
from tests.anchors import rel_l2
from tests.anchors import load_fixture as load_anchor_fixture


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def load_fixture(name: str) -> dict:
    return load_anchor_fixture(name, "Point-E's own code")


def fixture_model(fx: dict) -> PointEDiffusion:
    """A PointEDiffusion built from the fixture's Point-E config, weights loaded strictly by Point-E's names."""
    model = PointEDiffusion(**pointe_model_config(fx["config"]))
    model.denoiser.load_state_dict(fx["state_dict"], strict=True)
    return model.eval()


def _cond(case: dict) -> dict:
    cond = {}
    if "low_res" in case:
        cond["low_res"] = case["low_res"].transpose(1, 2)
        if isinstance(case.get("embeddings"), torch.Tensor):
            cond["clip_embedding"] = case["embeddings"]
    return cond


@pytest.mark.parametrize("name", ["pointe_base_uncond_small", "pointe_upsample_small"])
def test_forward_matches_pointe(name):
    """float32 within 1e-5 of Point-E's float32 run; float64 within 1e-12 of its all-float64 run."""
    fx = load_fixture(name)
    net = fixture_model(fx).denoiser
    for case in fx["cases"]:
        cond = _cond(case)
        with torch.no_grad():
            out32 = net(case["inputs"].transpose(1, 2), case["t"], cond).transpose(1, 2)
            net.double()
            out64 = net(case["inputs"].transpose(1, 2).double(), case["t"], {k: v.double() for k, v in cond.items()})
            net.float()
        err32, err64 = rel_l2(out32, case["outputs_float32"]), rel_l2(out64.transpose(1, 2), case["outputs_float64_pure"])
        print(f"{name} {case['name']}: float32 {err32:.1e}, float64 {err64:.1e}")
        assert err32 < 1e-5 and err64 < 1e-12


def _run_sampler(model: PointEDiffusion, record: dict, steps_recorded: int, sigma_max: float, cond=None):
    """Point-E's stage: initial noise x sigma_max, s_churn 0; returns (timesteps per call, states, final)."""
    calls, states = [], []
    forward = model.denoiser.forward

    def recording(x, t, c=None):
        calls.append(t.clone())
        return forward(x, t, c)

    model.denoiser.forward = recording
    sigmas = karras_sigmas(64, 1e-3, sigma_max)
    torch.testing.assert_close(sigmas, record["sigmas"], rtol=0, atol=0)
    try:
        noise = record["initial_noise"].transpose(1, 2)
        states.append(model.unscale(noise * sigmas[0]).transpose(1, 2))  # the start; the callback sees each step's end
        final = model.sample_channels(2, seed=0, noise=noise, s_churn=0.0, sigma_max=sigma_max,
                             cond=cond, callback=lambda o: states.append(model.unscale(o["x"]).transpose(1, 2)),
                             steps=64) if steps_recorded == 64 else None
    finally:
        model.denoiser.forward = forward
    return torch.stack(calls), states, final


@pytest.mark.slow
def test_karras_heun_64_steps_matches_pointe():
    """The whole 64-step run (127 network calls): every timestep exact, every state and the result to 1e-5."""
    fx = load_fixture("pointe_base_uncond_small")
    rec = fx["sampler"]
    calls, states, final = _run_sampler(fixture_model(fx), rec, 64, 120.0)
    assert torch.equal(calls, rec["model_t_per_call"])
    assert rel_l2(torch.stack(states), rec["x_steps"]) < 1e-5
    assert rel_l2(final.transpose(1, 2), rec["final_sample"]) < 1e-5


def test_karras_heun_first_steps_match_pointe():
    """The first 6 Heun steps of Point-E's run (fast): timesteps exact, states to 1e-6."""
    from shapediff.diffusion.karras_heun import gaussian_to_karras_denoiser, sample_karras_heun

    fx = load_fixture("pointe_base_uncond_small")
    rec, model = fx["sampler"], fixture_model(fx)
    calls, states = [], []

    def eps_model(x, t):
        calls.append(t.clone())
        return model.denoiser(x, t)

    denoise = gaussian_to_karras_denoiser(eps_model, model.diffusion.alphas_cumprod, 6)
    sigmas = rec["sigmas"][:7]  # Point-E's first 6 steps
    x = rec["x_T"].transpose(1, 2)
    out = sample_karras_heun(denoise, x, sigmas, callback=lambda o: states.append(o["x"]))  # after each step
    states = [x, *states]
    assert torch.equal(torch.stack(calls), rec["model_t_per_call"][:12])
    got = torch.stack([model.unscale(s).transpose(1, 2) for s in states])
    assert rel_l2(got, rec["x_steps"][:7]) < 1e-6
    assert out.x.shape == x.shape


@pytest.mark.slow
def test_upsampler_stage_matches_pointe():
    """Point-E's second stage (upsampler, sigma_max 160) from the recorded stage-1 result and noise."""
    fx = load_fixture("pointe_upsample_small")
    rec = fx["two_stage_sampler"]["stage2"]
    low_res = fx["two_stage_sampler"]["stage1"]["final_sample"].transpose(1, 2)
    calls, _, final = _run_sampler(fixture_model(fx), rec, 64, 160.0, cond={"low_res": low_res})
    assert torch.equal(calls, rec["model_t_per_call"])
    assert rel_l2(final.transpose(1, 2), rec["final_sample"]) < 1e-5
