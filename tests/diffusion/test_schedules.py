"""Beta schedules against independent NumPy re-implementations of the papers' formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shapediff.diffusion import SCHEDULES, make_beta_schedule


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedules_are_float64_in_unit_interval_with_decreasing_alpha_bar(name):
    betas = make_beta_schedule(name, 1000)
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    assert bool(((betas > 0) & (betas < 1)).all())
    abar = torch.cumprod(1 - betas, 0)
    assert bool((abar[1:] < abar[:-1]).all())
    assert abar[0] > 0.999 and abar[-1] < 1e-4


def test_linear_matches_pvd():
    betas = make_beta_schedule("linear", 1000)
    np.testing.assert_allclose(betas.numpy(), np.linspace(1e-4, 0.02, 1000), rtol=0, atol=1e-15)
    airplane = make_beta_schedule("linear", 1000, beta_start=1e-5, beta_end=0.008)
    assert float(airplane[0]) == pytest.approx(1e-5) and float(airplane[-1]) == pytest.approx(0.008)


def test_warm01_shape():
    """PVD get_betas('warm0.1'): linear ramp over the first int(0.1 T) steps, then constant beta_end."""
    betas = make_beta_schedule("warm0.1", 1000, beta_start=1e-4, beta_end=0.02).numpy()
    ref = 0.02 * np.ones(1000)
    ref[:100] = np.linspace(1e-4, 0.02, 100)
    np.testing.assert_allclose(betas, ref, rtol=0, atol=1e-15)
    assert betas[0] == pytest.approx(1e-4)
    assert np.all(np.diff(betas[:100]) > 0) and np.all(betas[100:] == 0.02)


def test_cosine_matches_nichol_dhariwal():
    s, T = 0.008, 1000
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    ref = np.array([min(1 - f(i + 1) / f(i), 0.999) for i in range(T)])
    betas = make_beta_schedule("cosine", T)
    np.testing.assert_allclose(betas.numpy(), ref, rtol=1e-10, atol=1e-15)
    abar = torch.cumprod(1 - betas, 0)
    # endpoints: alpha_bar(1/T) = f(1)/f(0) ~ 1 - 4e-5; the last beta is clipped at 0.999
    assert float(abar[0]) == pytest.approx(f(1) / f(0), rel=1e-12)
    assert float(betas[-1]) == 0.999 and float(abar[-1]) < 1e-8
    # alpha_bar follows the cosine closely wherever no clipping happened
    np.testing.assert_allclose(abar[:-1].numpy(), [f(i + 1) / f(0) for i in range(T - 1)], rtol=1e-9)


def test_sigmoid_matches_chen_2023():
    start, end, tau, T = -3.0, 3.0, 1.0, 1000
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    g = lambda u: max((sig(end / tau) - sig((u * (end - start) + start) / tau)) / (sig(end / tau) - sig(start / tau)), 1e-9)  # noqa: E731
    abar = torch.cumprod(1 - make_beta_schedule("sigmoid", T, start=start, end=end, tau=tau), 0).numpy()
    np.testing.assert_allclose(abar[:-1], [g((i + 1) / T) for i in range(T - 1)], rtol=1e-9)
    # a larger tau makes alpha_bar fall more linearly: at u = 0.25 it is lower
    soft = torch.cumprod(1 - make_beta_schedule("sigmoid", T, tau=3.0), 0)
    assert float(soft[249]) < float(abar[249])


def test_schedule_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"schedule: expected one of \['cosine', 'linear', 'sigmoid', 'warm0.1'\]"):
        make_beta_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="unknown keyword.*beta_stop"):
        make_beta_schedule("linear", 10, beta_stop=0.1)
    with pytest.raises(ValueError, match="num_timesteps"):
        make_beta_schedule("linear", 1)
    with pytest.raises(ValueError, match=r"betas must lie in \(0, 1\)"):
        make_beta_schedule("linear", 10, beta_end=1.5)
    with pytest.raises(ValueError, match="finite"):
        make_beta_schedule("linear", 10, beta_end=float("nan"))
