"""The sampling driver checks values once: the first denoiser call in full, later calls shapes only."""

import pytest
import torch

from shapediff.denoisers import PointNetDenoiser
from shapediff.diffusion import FlowMatching
from shapediff.value_checks import values_checked, values_trusted


def test_values_checked_is_scoped():
    assert not values_trusted()
    with values_checked():
        assert values_trusted()
    assert not values_trusted()


def test_denoiser_skips_value_checks_only_inside():
    net = PointNetDenoiser(width=8, depth=1, num_classes=3).eval()
    x, t = torch.full((2, 5, 3), float("nan")), torch.zeros(2)
    with pytest.raises(ValueError, match="x: contains NaN"):
        net(x, t)
    with pytest.raises(ValueError, match=r"class_label.*\[0, 3\)"):
        net(torch.zeros(2, 5, 3), t, {"class_label": torch.tensor([0, 7])})
    with values_checked():
        assert net(x, t).shape == x.shape  # no read-back; the output is NaN, as the input
        with pytest.raises(ValueError, match=r"x: expected a non-empty \(B, N, 3\)"):
            net(torch.zeros(2, 5, 4), t)  # shapes are still checked


def test_driver_checks_the_first_call_in_full_then_trusts():
    net = PointNetDenoiser(width=8, depth=1, num_classes=3).eval()
    seen = []

    def model(x, t, cond=None):
        seen.append(values_trusted())
        return net(x, t, cond)

    FlowMatching().sample(model, (2, 5, 3), sampler="flow_euler", steps=4, seed=0)
    assert seen == [False, True, True, True]
    with pytest.raises(ValueError, match=r"class_label.*\[0, 3\)"):  # a bad label is caught at the first call
        FlowMatching().sample(net, (2, 5, 3), sampler="flow_euler", steps=4, seed=0,
                              cond={"class_label": torch.tensor([0, 5])})
