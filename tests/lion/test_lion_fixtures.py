"""LION's networks and sampler against LION's own recorded outputs (``lion_{vae,priors,sampler}_w025.pt``).

Every fixture was recorded from nv-tlabs/LION's code on the CPU (see the fixtures' README). float32 results are
compared with LION's float32 by relative L2 (LION's own float32-vs-float64 spread is recorded in each case);
float64 results with LION's float64 run (the priors with the sinusoid computed in float64, as our float64 port
computes it). FPS centres must be identical. The sampler is checked step by step: from LION's stored state i,
its stored noise and our port of the prior, one step of shapediff's shared sampler must give LION's state i+1.
The first case of each file runs by default; every case and every step with ``-m slow``.
"""

from __future__ import annotations

import pytest
import torch

from shapediff.models.lion_vae import LionVAE
from shapediff.denoisers import pvcnn
from shapediff.diffusion import samplers
from shapediff.models.lion import LionModel
from tests.anchors import load_fixture, rel_l2

F32_BOUND = 1e-5      # LION's own float32-vs-float64 spread here is 3e-8 .. 2.4e-6
F64_BOUND = 1e-13     # float64 rounding (observed 3e-17 .. 4e-15)
RECORDED = "LION (nv-tlabs/LION @ 7711b3d) on CPU"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def vae_fx():
    return load_fixture("lion_vae_w025", RECORDED)


@pytest.fixture(scope="module")
def priors_fx():
    return load_fixture("lion_priors_w025", RECORDED)


def fixture_model(vae_fx, priors_fx, **overrides) -> LionModel:
    """The fixtures' LION (width 0.25 PVCNNs, style_dim 32, global prior width 128) with their weights, eval mode."""
    from shapediff.convert.lion import lion_to_shapediff

    kwargs = {"vae": {"style_dim": 32, "width": 0.25}, "global_prior": {"channels": 128},
              "local_prior": {"width": 0.25}, "normalization": "none", **overrides}
    model = LionModel(**kwargs).eval()
    missing, unexpected = model.load_state_dict(lion_to_shapediff(vae_fx["state_dict"], priors_fx["state_dict"]),
                                                strict=False)
    assert not unexpected and set(missing) == {"normalizer.mean", "normalizer.scale", "normalizer.fitted",
                                               "normalizer.bound", "vae_steps"}
    return model


class FPSRecorder:
    """Records the FPS centre indices every set-abstraction stage picks (in call order)."""

    def __init__(self, monkeypatch):
        self.calls: list[torch.Tensor] = []
        original = pvcnn._sample_centres

        def recording(coords, num, start, convention):
            idx = original(coords, num, start, convention)
            self.calls.append(idx.clone())
            return idx
        monkeypatch.setattr(pvcnn, "_sample_centres", recording)


def _vae_cases(fx, slow: bool):
    return fx["cases"] if slow else fx["cases"][:1]


@pytest.mark.parametrize("which", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_vae_float32_matches_lion(vae_fx, which, monkeypatch):
    case = vae_fx["cases"][which]  # 0: synthetic chair + airplane; 1: on a 1/32 grid (tied FPS distances)
    vae = LionVAE(style_dim=32, width=0.25).eval()
    vae.load_state_dict(vae_fx["state_dict"], strict=True)
    fps = FPSRecorder(monkeypatch)
    x = case["inputs"]
    with torch.no_grad():
        q_z = vae.encode_global(x)
        q_h = vae.encode_local(x, case["z_global_float32"])
        x_hat = vae.decode(case["z_global_float32"], case["z_local_float32"].reshape(2, 2048, 4))
        decoded = vae.decode(case["decoder_z_global"], case["decoder_z_local"].reshape(2, 2048, 4))
    spread = case["float32_vs_float64"]
    for ours, theirs in ((q_z.mean, "global_mu"), (0.5 * q_z.logvar, "global_log_sigma"),
                         (q_h.mean.reshape(2, -1), "local_mu"), (0.5 * q_h.logvar.reshape(2, -1), "local_log_sigma"),
                         (x_hat, "x_0_pred")):
        assert rel_l2(ours, case[f"{theirs}_float32"]) < F32_BOUND, (theirs, spread)
    assert rel_l2(decoded, case["decoder_output_float32"]) < F32_BOUND
    # 10 FPS stages (style encoder 2, latent-point encoder 4, decoder 4), then the decoder alone (4)
    assert len(fps.calls) == 14
    for ours, theirs in zip(fps.calls, list(case["fps_indices_encoder_decoder"]) + list(case["decoder_fps_indices"])):
        assert torch.equal(ours.long(), theirs.long())
    # the posterior sample is eps * sigma + mu, as LION draws it
    assert rel_l2(q_z.sample(case["eps_global"]), case["z_global_float32"]) < F32_BOUND


@pytest.mark.slow
@pytest.mark.parametrize("which", [0, 1])
def test_vae_float64_matches_lion(vae_fx, which):
    case = vae_fx["cases"][which]
    vae = LionVAE(style_dim=32, width=0.25).eval()
    vae.load_state_dict(vae_fx["state_dict"], strict=True)
    vae.double()
    x = case["inputs"].double()
    with torch.no_grad():
        q_z = vae.encode_global(x)
        q_h = vae.encode_local(x, case["z_global_float64"])
        x_hat = vae.decode(case["z_global_float64"], case["z_local_float64"].reshape(2, 2048, 4))
    for ours, theirs in ((q_z.mean, "global_mu"), (0.5 * q_z.logvar, "global_log_sigma"),
                         (q_h.mean.reshape(2, -1), "local_mu"), (0.5 * q_h.logvar.reshape(2, -1), "local_log_sigma"),
                         (x_hat, "x_0_pred")):
        assert rel_l2(ours, case[f"{theirs}_float64"]) < F64_BOUND, theirs


def _prior_outputs(model, case, dtype):
    t = case["t_model"].to(dtype)
    with torch.no_grad():
        glob = model.priors[0](case["global_inputs"].to(dtype)[:, :, 0, 0], t)
        local = model.priors[1](case["local_inputs"].to(dtype).reshape(2, 2048, 4), t, case["style"].to(dtype))
    return glob, local.reshape(2, -1)


@pytest.mark.parametrize("which", [pytest.param(0, marks=pytest.mark.slow), pytest.param(1, marks=pytest.mark.slow), 2])
def test_priors_match_lion(vae_fx, priors_fx, which, monkeypatch):
    """Both priors at t_index in {0, 999}, {10, 500} and, on a 1/32 grid (exact FPS ties), {3, 700}; fed t + 1."""
    case = priors_fx["cases"][which]
    model = fixture_model(vae_fx, priors_fx)
    assert torch.equal(case["t_model"], case["t_index"].float() + 1)
    fps = FPSRecorder(monkeypatch)
    glob, local = _prior_outputs(model, case, torch.float32)
    assert rel_l2(glob, case["global_outputs_float32"].reshape(2, -1)) < F32_BOUND, case["global_float32_vs_float64"]
    assert rel_l2(local, case["local_outputs_float32"].reshape(2, -1)) < F32_BOUND, case["local_float32_vs_float64"]
    assert [c.long().tolist() for c in fps.calls] == [c.long().tolist() for c in case["local_fps_indices"]]
    # the prior through the composition: shapediff's t in [0, T), shifted by one inside
    with torch.no_grad():
        eps = model.prior_eps(1, case["local_inputs"].reshape(2, 2048, 4), case["t_index"], case["style"])
    assert torch.equal(eps.reshape(2, -1), local)
    model.double()
    glob, local = _prior_outputs(model, case, torch.float64)
    assert rel_l2(glob, case["global_outputs_float64_sinusoid64"].reshape(2, -1)) < F64_BOUND
    assert rel_l2(local, case["local_outputs_float64_sinusoid64"].reshape(2, -1)) < F64_BOUND


# ------------------------------------------------------------------------------------------------- sampler
@pytest.fixture(scope="module")
def sampler_fx():
    return load_fixture("lion_sampler_w025", RECORDED)


def _run(sampler_fx, name):
    return next(r for r in sampler_fx["runs"] if r["name"] == name)


def teacher_forced_step(model, level, x, t, t_next, noise, style, sampler, monkeypatch):
    """One step of shapediff's shared sampler from level t to t_next (None: the clean data) with LION's stored
    noise served to the sampler's one draw."""
    served = []

    def stored_noise(like, generator):
        served.append(True)
        return noise.to(like.dtype).reshape(like.shape)
    monkeypatch.setattr(samplers, "randn_like", stored_noise)

    def eps_model(x_t, t_model, cond):
        return model.prior_eps(level, x_t, t_model, style)
    options = {"eta": 1.0} if sampler == "ddim" else {}
    with torch.no_grad():
        out = model.diffusion.sample(eps_model, tuple(x.shape), sampler=sampler, steps=1, start=int(t), end=t_next,
                                     noise=x, seed=0, **options)
    assert len(served) == (0 if t_next is None else 1)  # no draw on the last step (LION draws one and drops it)
    return out


def _step_indices(run, slow: bool):
    n = len(run["stored_steps"])
    return range(n) if slow else sorted({0, n // 2, n - 1})


@pytest.mark.parametrize("name,slow", [("ddpm_T20_full", False), ("ddim_T1000_S10", False),
                                       pytest.param("ddpm_T20_full", True, marks=pytest.mark.slow),
                                       pytest.param("ddim_T1000_S10", True, marks=pytest.mark.slow)])
def test_sampler_steps_match_lion(vae_fx, priors_fx, sampler_fx, name, slow, monkeypatch):
    """Every step of LION's two loops (global, then latent points given the global result), from its stored
    state and noise: DDPM on a T = 20 schedule, DDIM (eta 1, floor spacing) on the released T = 1000."""
    run = _run(sampler_fx, name)
    ddim = run["ddim_step"] > 0
    model = fixture_model(vae_fx, priors_fx, diffusion={"num_timesteps": run["num_steps_T"]})
    assert torch.allclose(model.diffusion.betas.float(), run["schedule"]["betas"])
    t_seq = run["model_t_per_call"][:, 0].long() - 1  # LION calls with t + 1
    expected = samplers.SPACINGS["uniform_floor" if ddim else "uniform"].fns["gaussian"](model.diffusion.alphas_cumprod, len(t_seq))
    assert torch.equal(t_seq, expected)
    style = run["style_condition_float32"][:, :, 0, 0]
    worst = 0.0
    for level, key, shape in ((0, "global", (2, 32)), (1, "local", (2, 2048, 4))):
        states = run[f"{key}_states_float32"]
        for i in _step_indices(run, slow):
            t_next = int(t_seq[i + 1]) if i + 1 < len(t_seq) else None
            x = states[i].reshape(shape)
            fps = FPSRecorder(monkeypatch) if level == 1 else None
            out = teacher_forced_step(model, level, x, t_seq[i], t_next, run[f"step_noise_{key}"][i], style,
                                      "ddim" if ddim else "ddpm", monkeypatch)
            if fps is not None:
                assert [c.long().tolist() for c in fps.calls] == [c.long().tolist() for c in run["local_fps_indices_float32"][i]]
            if t_next is not None:
                target = states[i + 1].reshape(shape)
            elif level == 0:
                target = style
            else:  # the last latent-point step: its decoding is the sampler's output
                with torch.no_grad():
                    out = model.vae.decode(style, out)
                target = run["final_points_float32"]
            err = rel_l2(out, target)
            worst = max(worst, err)
            assert err < F32_BOUND, (key, i, err)
    print(f"{name}: worst float32 step rel L2 {worst:.2e}")


def lion_step_formula(x, eps, t, t_next, tables, noise, ddim: bool):
    """LION's update as ``utils/diffusion_pvd.py`` writes it (an independent twin of the shared sampler), with its
    dtypes: every coefficient is computed from the ``tables`` (betas, alphas, alpha_bars) in their own dtype (float32
    in LION, even in its float64 runs), then applied to x and to the noise (served in x's dtype).
    DDPM: mean = 1/sqrt(alpha_t) (x - beta_t eps / sqrt(1 - abar_t)) (t = 0: 1/sqrt(abar_0) (x - sqrt(1 - abar_0) eps)),
    plus exp(0.5 log beta_t) z for t > 0. DDIM (eta 1): x sqrt(abar'/abar) + (c eps + sigma z)."""
    beta, alpha, abar = tables["betas"], tables["alphas"], tables["alpha_bars"]
    noise = noise.to(x.dtype)
    if ddim:
        a_t = abar[t]
        a_n = torch.tensor(1.0, dtype=abar.dtype) if t_next is None else abar[t_next]
        sigma = torch.tensor(0.0, dtype=abar.dtype) if t_next is None else torch.sqrt((1 - a_n) / (1 - a_t) * (1 - a_t / a_n))
        c = torch.sqrt(1 - a_n - sigma**2) - torch.sqrt(1 - a_t) * torch.sqrt(a_n / a_t)
        return x * torch.sqrt(a_n / a_t) + (c * eps + sigma * noise)
    if t == 0:
        return 1.0 / torch.sqrt(abar[0]) * (x - torch.sqrt(1.0 - abar[0]) * eps)
    mean = 1.0 / torch.sqrt(alpha[t]) * (x - beta[t] * eps / torch.sqrt(1.0 - abar[t]))
    return mean + torch.exp(0.5 * torch.log(beta[t])).reshape(1, 1).expand_as(noise) * noise


@pytest.mark.parametrize("name", ["ddpm_T20_full", "ddim_T1000_S10"])
def test_sampler_steps_float64(vae_fx, priors_fx, sampler_fx, name, monkeypatch):
    """float64, the global loop. LION's float64 run takes its step coefficients from float32 tables (computed in
    float32 on most operations); shapediff's process computes them in float64 from float64 tables. Shown here:
    (1) LION's update written from its code with float64 tables is shapediff's shared sampler to float64 rounding
    (the sampler is LION's algorithm); (2) shapediff's float64 steps are within 1e-6 of LION's float64 states
    (measured: DDPM T = 20 <= 3.3e-7, DDIM S = 10 <= 2.6e-7; the float32 coefficients; float32 runs agree to 1e-6)."""
    run = _run(sampler_fx, name)
    ddim = run["ddim_step"] > 0
    model = fixture_model(vae_fx, priors_fx, diffusion={"num_timesteps": run["num_steps_T"]}).double()
    d = model.diffusion
    tables64 = {"betas": d.betas, "alphas": 1 - d.betas, "alpha_bars": d.alphas_cumprod}
    t_seq = (run["model_t_per_call"][:, 0].long() - 1).tolist()
    states = run["global_states_float64"]
    worst = 0.0
    for i, t in enumerate(t_seq):
        t_next = t_seq[i + 1] if i + 1 < len(t_seq) else None
        x, noise = states[i].reshape(2, 32), run["step_noise_global"][i].reshape(2, 32)
        target = states[i + 1].reshape(2, 32) if t_next is not None else run["style_condition_float64"][:, :, 0, 0]
        with torch.no_grad():
            eps = model.prior_eps(0, x, torch.full((2,), t))
        ours = teacher_forced_step(model, 0, x, t, t_next, noise, None, "ddim" if ddim else "ddpm", monkeypatch)
        assert rel_l2(ours, lion_step_formula(x, eps, t, t_next, tables64, noise, ddim)) < 1e-13, (i, "the sampler")
        worst = max(worst, rel_l2(ours, target))
        assert worst < 1e-6, (i, "LION's float32 coefficients")
    print(f"{name}: worst float64 step rel L2 vs LION's float64 run {worst:.2e}")


@pytest.mark.parametrize("name", ["ddpm_T20_full", "ddim_T1000_S10"])
def test_global_loop_free_running(vae_fx, priors_fx, sampler_fx, name, monkeypatch):
    """The global prior's whole loop, free running through ``GaussianDiffusion.sample`` from LION's x_T with LION's
    step noise served in order, lands on LION's result (no FPS in this network, so the float32 runs do not part)."""
    run = _run(sampler_fx, name)
    ddim = run["ddim_step"] > 0
    model = fixture_model(vae_fx, priors_fx, diffusion={"num_timesteps": run["num_steps_T"]})
    draws = iter(run["step_noise_global"])
    monkeypatch.setattr(samplers, "randn_like", lambda like, generator: next(draws).reshape(like.shape).to(like.dtype))
    options = {"eta": 1.0, "spacing": "uniform_floor"} if ddim else {}
    with torch.no_grad():
        z = model.diffusion.sample(lambda x, t, c: model.prior_eps(0, x, t), (2, 32), sampler="ddim" if ddim else "ddpm",
                                   steps=len(run["stored_steps"]), noise=run["x_T_global"][:, :, 0, 0], seed=0, **options)
    err = rel_l2(z, run["style_condition_float32"][:, :, 0, 0])
    print(f"{name}: global loop free running, rel L2 {err:.2e}")
    assert err < F32_BOUND
