"""The sampler conformance suite: every (process, sampler) pair the registry declares passes all of it (diffusers'
``SchedulerCommonTest`` habit): Gaussian samplers on Gaussian diffusion, flow samplers on flow matching, Point-E's
Karras-Heun. A new sampler is one function and one registry entry, and then one line in ``CLOSED_FORM`` (its exact
discretisation bias at the steps used there, measured by the push-forward tests of tests/diffusion/) for the
closed-form checks.

Checks: shape and finite output without touching the global RNG; the same seed (or generator) gives the same
samples and another seed other ones; undeclared options are errors; the per-step callback sees every step;
known entries are held exactly (PVD's "clean" and RePaint's "noised" modes), or a sampler that declares it holds
none refuses them; driven by the closed-form optimal denoiser / velocity (tests/diffusion/analytic.py) it reproduces
a Gaussian's moments and a Gaussian mixture's weights and moments.
"""

from __future__ import annotations

import pytest
import torch

from shapediff.diffusion import FlowMatching, GaussianDiffusion
from shapediff.diffusion.samplers import REGISTRY
from tests.conformance.toys import Toy
from tests.diffusion.analytic import ExactVelocity, MixtureDenoiser, binomial_tolerance, sample_moments
from tests.diffusion.test_samplers_analytic import COV, COV_BIAS, MU, N_SAMPLES, _assert_moments

PROCESSES = {"gaussian": lambda: GaussianDiffusion("linear", 100), "flow": lambda: FlowMatching(num_timesteps=100)}
PAIRS = [(process, name) for name, spec in sorted(REGISTRY.items()) for process in spec.processes]
IDS = [f"{process}-{name}" for process, name in PAIRS]
# Closed-form checks: (steps, covariance bias allowed there) per sampler; None = its default steps. The biases are
# the exact push-forward errors (tests/diffusion/test_samplers_analytic.py, tests/diffusion/test_flow_matching.py).
CLOSED_FORM = {**{name: (None, COV_BIAS[(name, spec.default_steps)]) for name, spec in REGISTRY.items()
                  if (name, spec.default_steps) in COV_BIAS},
               "flow_euler": (20, 0.16), "flow_heun": (8, 0.029), "flow_midpoint": (8, 0.001),
               "karras_heun": (None, 0.01)}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.mark.parametrize("process,sampler", PAIRS, ids=IDS)
def test_shape_finite_and_no_global_rng(process, sampler):
    model, state = Toy(), torch.get_rng_state()
    out = PROCESSES[process]().sample(model, (3, 5, 3), sampler=sampler, steps=6, seed=0)
    assert out.shape == (3, 5, 3) and out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is never used


@pytest.mark.parametrize("process,sampler", PAIRS, ids=IDS)
def test_determinism_by_seed_and_generator(process, sampler):
    model, kw = Toy(), {k: v for k, v in REGISTRY[sampler].options.items() if k == "eta"}
    if "eta" in kw:
        kw["eta"] = 1.0  # DDIM's stochastic form draws noise on every step too
    diffusion = PROCESSES[process]()
    draw = lambda **seed: diffusion.sample(model, (3, 5, 3), sampler=sampler, steps=8, **seed, **kw)  # noqa: E731
    a, b = draw(seed=11), draw(seed=11)
    c, d = draw(generator=torch.Generator().manual_seed(11)), draw(seed=12)
    assert torch.equal(a, b) and torch.equal(a, c) and not torch.equal(a, d)


@pytest.mark.parametrize("process,sampler", PAIRS, ids=IDS)
def test_options_a_sampler_does_not_declare_are_errors(process, sampler):
    """The registry is the one place that says which keyword reaches which sampler: nothing is silently dropped."""
    diffusion = PROCESSES[process]()
    with pytest.raises(ValueError, match="unknown"):
        diffusion.sample(Toy(), (1, 4, 3), sampler=sampler, steps=3, seed=0, not_an_option=1.0)
    if "eta" not in REGISTRY[sampler].options:
        with pytest.raises(ValueError, match="eta"):
            diffusion.sample(Toy(), (1, 4, 3), sampler=sampler, steps=3, seed=0, eta=1.0)
    other = next(p for p in PROCESSES if p != process)
    if other not in REGISTRY[sampler].processes:  # a sampler runs only the processes it declares
        with pytest.raises(ValueError, match=f"{sampler!r} integrates"):
            PROCESSES[other]().sample(Toy(), (1, 4, 3), sampler=sampler, steps=3, seed=0)


@pytest.mark.parametrize("process,sampler", PAIRS, ids=IDS)
def test_callback_sees_every_step_and_the_final_sample(process, sampler):
    """k-diffusion's per-step callback: x after step i, i, the level's time and the last x0 estimate."""
    seen, model, diffusion = [], Toy(), PROCESSES[process]()
    out = diffusion.sample(model, (2, 4, 3), sampler=sampler, steps=6, seed=0, callback=seen.append)
    assert [info["i"] for info in seen] == list(range(6))
    ts = [info["t"] for info in seen]
    assert ts == sorted(ts, reverse=True) and len(set(ts)) == 6
    assert all(info["denoised"].shape == out.shape for info in seen)
    assert torch.equal(seen[-1]["x"], out)
    plain = diffusion.sample(model, (2, 4, 3), sampler=sampler, steps=6, seed=0)
    assert torch.equal(plain, out)  # watching changes nothing


@pytest.mark.parametrize("process,sampler", PAIRS, ids=IDS)
@pytest.mark.parametrize("keep_known,jumps", [("clean", 1), ("noised", 1), ("noised", 3)])
def test_masked_entries_equal_known_exactly(process, sampler, keep_known, jumps):
    known = torch.randn(2, 7, 3)
    mask = torch.zeros(2, 7, 1, dtype=torch.bool)
    mask[:, :3] = True
    seen = []

    class Spy(Toy):
        def forward(self, x, t, cond=None):
            seen.append(x[:, :3].clone())
            return super().forward(x, t, cond)

    kw = dict(sampler=sampler, steps=10, seed=0, known=known, mask=mask, keep_known=keep_known, resample_jumps=jumps)
    if not REGISTRY[sampler].holds_known:  # declared: it refuses known values in one clear error
        with pytest.raises(ValueError, match="holds no known values"):
            PROCESSES[process]().sample(Spy(), (2, 7, 3), **kw)
        return
    out = PROCESSES[process]().sample(Spy(), (2, 7, 3), **kw)
    assert torch.equal(out[:, :3], known[:, :3])
    assert bool(torch.isfinite(out).all()) and not torch.equal(out[:, 3:], known[:, 3:])
    if keep_known == "clean":  # PVD: the model always sees the clean known values
        assert all(torch.equal(s, known[:, :3]) for s in seen)
    else:  # RePaint: noised to the step's level, so they differ at the first step
        assert not torch.equal(seen[0], known[:, :3])


def _closed_form(sampler: str) -> tuple[int | None, float]:
    if sampler not in CLOSED_FORM:
        pytest.fail(f"{sampler}: add its covariance bias at the steps used to CLOSED_FORM (measure it with the "
                    "push-forward tests in tests/diffusion/)")
    return CLOSED_FORM[sampler]


def _exact_model(process: str, weights, means, covs):
    """(process, the exact denoiser / velocity of data sum_k w_k N(mu_k, Sigma_k) for it)."""
    if process == "flow":
        return FlowMatching(), ExactVelocity(weights, means, covs)
    diffusion = GaussianDiffusion("linear", 1000, prediction="eps")
    return diffusion, MixtureDenoiser(diffusion.alphas_cumprod, "eps", weights, means, covs)


@pytest.mark.parametrize("process,sampler", PAIRS, ids=IDS)
def test_reproduces_a_gaussian_with_the_optimal_denoiser(process, sampler):
    steps, bound = _closed_form(sampler)
    diffusion, model = _exact_model(process, [1.0], MU[None], COV[None])
    x = diffusion.sample(model, (N_SAMPLES // 2, 3), sampler=sampler, steps=steps, seed=0).double()
    _assert_moments(x, bound)


WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
MEANS = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], dtype=torch.float64)
COVS = torch.stack([torch.tensor([[0.3, 0.1], [0.1, 0.2]]), 0.25 * torch.eye(2), torch.tensor([[0.4, -0.15], [-0.15, 0.2]])]).double()


def _mixture_moments():
    mean = (WEIGHTS[:, None] * MEANS).sum(0)
    second = (WEIGHTS[:, None, None] * (COVS + MEANS[:, :, None] * MEANS[:, None, :])).sum(0)
    return mean, second - mean[:, None] * mean[None, :]


def _assign(x: torch.Tensor) -> torch.Tensor:
    """Index of the most likely component of each sample (components are > 6 std apart)."""
    logp = torch.stack([torch.distributions.MultivariateNormal(MEANS[k], COVS[k]).log_prob(x) for k in range(3)], 1)
    return logp.argmax(1)


@pytest.mark.parametrize("process,sampler", PAIRS, ids=IDS)
def test_mixture_weights_and_moments(process, sampler):
    n, (steps, bound) = 2000, _closed_form(sampler)
    diffusion, model = _exact_model(process, WEIGHTS, MEANS, COVS)
    x = diffusion.sample(model, (n, 2), sampler=sampler, steps=steps, seed=1).double()
    frac = torch.bincount(_assign(x), minlength=3).double() / n
    for k in range(3):
        assert abs(float(frac[k] - WEIGHTS[k])) <= binomial_tolerance(float(WEIGHTS[k]), n), (frac, WEIGHTS)
    mean, cov = _mixture_moments()
    # The mixture is not Gaussian; its moments' SEs are estimated from the samples themselves.
    m, c = sample_moments(x)
    centred = x - m
    se_cov = ((centred[:, :, None] * centred[:, None, :]).var(0) / n).sqrt()
    assert bool(((m - mean).abs() <= 4.5 * (c.diagonal() / n).sqrt() + 0.01).all()), (m, mean)
    assert bool(((c - cov).abs() <= 4.5 * se_cov + 0.1 + bound).all()), (c, cov)
