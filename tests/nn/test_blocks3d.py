"""shapediff.nn.blocks3d.Upsample3d: both kinds, and the transposed kind holding the nearest kind exactly."""

from __future__ import annotations

import pytest
import torch

from shapediff.nn.blocks3d import Upsample3d

# per axis: nearest x2 then a 3-tap convolution (taps w0 w1 w2 at fine j-1, j, j+1) reads coarse cells i-1, i for
# even j = 2i (w0, w1 + w2) and i, i+1 for odd j (w0 + w1, w2); a kernel-4 stride-2 transposed convolution (padding
# 1) writes input cell i to outputs 2i - 1 + k, so its taps k = 0..3 are w2, w1 + w2, w0 + w1, w0.
TAPS = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def test_upsample_kinds_shapes_and_errors():
    x = torch.randn(2, 6, 4, 4, 4)
    for kind in ("nearest", "transposed"):
        assert Upsample3d(6, 3, kind=kind)(x).shape == (2, 3, 8, 8, 8)
    assert Upsample3d(6)(x).shape == (2, 6, 8, 8, 8)
    with pytest.raises(ValueError, match="kind"):
        Upsample3d(6, kind="bilinear")


def test_transposed_upsample_holds_the_nearest_kind():
    torch.manual_seed(0)
    near, trans = Upsample3d(5, 3), Upsample3d(5, 3, kind="transposed")
    w = near.conv.weight.detach()  # (out, in, 3, 3, 3)
    with torch.no_grad():
        trans.conv.weight.copy_(torch.einsum("ai,bj,ck,oxijk->xoabc", TAPS, TAPS, TAPS, w))
        trans.conv.bias.copy_(near.conv.bias)
    x = torch.randn(2, 5, 3, 4, 5)
    assert torch.allclose(trans(x), near(x), atol=1e-5)
