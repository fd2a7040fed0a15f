"""PointTransformer: equivariance, conditioning, null-condition dropout, guidance, learning."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from shapediff.denoisers import PointTransformer
from shapediff.nn.transformer_blocks import AdaLNZero, FinalLayer

MODES = list(itertools.product(["token", "adaln"], [None, "tokens", "cross_attention"]))


def _tiny(time_conditioning="token", partial_encoder=None, num_classes=3, **kw) -> PointTransformer:
    kw = {"width": 32, "depth": 2, "heads": 4, "time_embed_dim": 32, **kw}
    return PointTransformer(time_conditioning=time_conditioning, partial_encoder=partial_encoder,
                            num_classes=num_classes, **kw)


def _randomise_zero_inits(model: nn.Module, std: float = 0.2) -> nn.Module:
    """Give the zero-initialised output head and adaLN-Zero layers random weights.

    At initialisation the output is identically 0, which would make every equivariance or
    conditioning test pass trivially.
    """
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (AdaLNZero, FinalLayer)):
                m.linear.weight.copy_(torch.randn(m.linear.weight.shape, generator=g) * std)
                m.linear.bias.copy_(torch.randn(m.linear.bias.shape, generator=g) * std)
    return model


def _inputs(b=3, n=40, m=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 3, generator=g)
    t = torch.randint(0, 1000, (b,), generator=g)
    cond = {"class_label": torch.arange(b) % 3, "partial": torch.randn(b, m, 3, generator=g)}
    return x, t, cond


def _cond_for(model: PointTransformer, cond: dict) -> dict:
    return {k: v for k, v in cond.items() if k != "partial" or model.partial_encoder is not None}


@pytest.mark.parametrize("time_conditioning", ["token", "adaln"])
def test_output_is_zero_at_initialisation(time_conditioning):
    model = _tiny(time_conditioning, "tokens")
    x, t, cond = _inputs()
    out = model(x, t, cond)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0
    # ... and the zero head still receives a gradient, so training can start.
    (model(x, t, cond) * torch.randn_like(x)).sum().backward()
    assert model.final.linear.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("time_conditioning", "partial_encoder"), MODES)
def test_permutation_equivariance(time_conditioning, partial_encoder):
    model = _randomise_zero_inits(_tiny(time_conditioning, partial_encoder)).eval()
    x, t, cond = _inputs()
    cond = _cond_for(model, cond)
    perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(1))
    out = model(x, t, cond)
    out_perm = model(x[:, perm], t, cond)
    torch.testing.assert_close(out_perm, out[:, perm], rtol=1e-4, atol=1e-5)
    # Not trivially equivariant: different points get different outputs.
    assert (out[:, 0] - out[:, 1]).abs().max() > 1e-3
    if partial_encoder is not None:
        # The partial cloud is a set too: reordering it leaves every output unchanged.
        pperm = torch.randperm(cond["partial"].shape[1], generator=torch.Generator().manual_seed(2))
        out_p = model(x, t, {**cond, "partial": cond["partial"][:, pperm]})
        torch.testing.assert_close(out_p, out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("time_conditioning", "partial_encoder"), MODES)
def test_conditioning_changes_output(time_conditioning, partial_encoder):
    model = _randomise_zero_inits(_tiny(time_conditioning, partial_encoder)).eval()
    x, t, cond = _inputs()
    cond = _cond_for(model, cond)
    out = model(x, t, cond)
    other_class = model(x, t, {**cond, "class_label": (cond["class_label"] + 1) % 3})
    assert (out - other_class).abs().amax(dim=(1, 2)).min() > 1e-3
    assert (out - model(x, t, None)).abs().amax(dim=(1, 2)).min() > 1e-3
    assert (out - model(x, t + 100, cond)).abs().amax(dim=(1, 2)).min() > 1e-3
    if partial_encoder is not None:
        other_partial = model(x, t, {**cond, "partial": cond["partial"] + 0.5})
        assert (out - other_partial).abs().amax(dim=(1, 2)).min() > 1e-3
    # Batch entries are independent: one sample alone gives the same answer as in the batch.
    alone = model(x[1:2], t[1:2], {k: v[1:2] for k, v in cond.items()})
    torch.testing.assert_close(alone, out[1:2], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("time_conditioning", "partial_encoder"), MODES)
def test_condition_dropout_is_the_null_condition(time_conditioning, partial_encoder):
    """Train mode drops whole conditions per sample; a dropped sample equals cond=None exactly."""
    model = _randomise_zero_inits(_tiny(time_conditioning, partial_encoder, cond_drop_prob=0.5))
    x, t, cond = _inputs(b=64, n=16, m=5)
    cond = _cond_for(model, cond)
    with torch.no_grad():
        model.eval()
        cond_out, null_out = model(x, t, cond), model(x, t, None)
        assert (cond_out - null_out).abs().amax(dim=(1, 2)).min() > 1e-3
        model.train()
        torch.manual_seed(7)
        mixed = model(x, t, cond)
    is_cond = (mixed - cond_out).abs().amax(dim=(1, 2)) < 1e-4
    is_null = (mixed - null_out).abs().amax(dim=(1, 2)) < 1e-4
    assert bool((is_cond ^ is_null).all()), "every sample is either fully conditioned or fully null"
    # 64 Bernoulli(0.5) draws: P(dropped count outside [16, 48]) < 1e-4.
    assert 16 <= int(is_null.sum()) <= 48


def test_condition_dropout_extremes_and_eval_mode():
    x, t, cond = _inputs()
    always = _randomise_zero_inits(_tiny("token", "tokens", cond_drop_prob=1.0))
    never = _randomise_zero_inits(_tiny("token", "tokens", cond_drop_prob=0.0))
    never.load_state_dict(always.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(always.train()(x, t, cond), always.eval()(x, t, None))
        torch.testing.assert_close(never.train()(x, t, cond), never.eval()(x, t, cond))
        # eval mode never drops, whatever cond_drop_prob says
        torch.testing.assert_close(always.eval()(x, t, cond), never.eval()(x, t, cond))


def test_partial_only_and_class_only_conditions():
    model = _randomise_zero_inits(_tiny("adaln", "tokens")).eval()
    x, t, cond = _inputs()
    full = model(x, t, cond)
    only_class = model(x, t, {"class_label": cond["class_label"]})
    only_partial = model(x, t, {"partial": cond["partial"]})
    assert (full - only_class).abs().max() > 1e-3 and (full - only_partial).abs().max() > 1e-3
    # None values are treated as absent keys.
    torch.testing.assert_close(model(x, t, {"class_label": cond["class_label"], "partial": None}), only_class)


def test_extra_point_features_and_sizes():
    model = _randomise_zero_inits(_tiny(in_channels=6, out_channels=4, num_classes=None)).eval()
    for n in (1, 7, 50):
        out = model(torch.randn(2, n, 6), torch.tensor([0, 999]))
        assert out.shape == (2, n, 4) and torch.isfinite(out).all()


def test_float_timesteps_and_gradients_reach_every_input():
    model = _randomise_zero_inits(_tiny("adaln", "cross_attention"))
    x, t, cond = _inputs()
    x.requires_grad_(True)
    partial = cond["partial"].clone().requires_grad_(True)
    model(x, t.float() + 0.5, {**cond, "partial": partial}).pow(2).sum().backward()
    assert x.grad.abs().sum() > 0 and partial.grad.abs().sum() > 0
    assert model.class_embed.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "call", "match"),
    [
        ({}, lambda m: m(torch.randn(2, 5), torch.zeros(2, dtype=torch.long)), r"x: expected a \(B, N, 3\)"),
        ({}, lambda m: m(torch.randn(2, 5, 2), torch.zeros(2, dtype=torch.long)), r"x: expected a \(B, N, 3\)"),
        ({}, lambda m: m(torch.randn(2, 0, 3), torch.zeros(2, dtype=torch.long)), "non-empty"),
        ({}, lambda m: m(torch.full((2, 5, 3), float("nan")), torch.zeros(2, dtype=torch.long)), "finite"),
        ({}, lambda m: m(torch.randn(2, 5, 3), torch.zeros(3, dtype=torch.long)), r"t: expected a \(2,\)"),
        ({}, lambda m: m(torch.randn(2, 5, 3), torch.zeros(2, dtype=torch.long), {"text": 1}), "unknown key"),
        ({}, lambda m: m(torch.randn(2, 5, 3), torch.zeros(2, dtype=torch.long), [1]), "cond: expected None or a dict"),
        ({"num_classes": None}, lambda m: m(torch.randn(2, 5, 3), torch.zeros(2, dtype=torch.long),
                                            {"class_label": torch.zeros(2, dtype=torch.long)}), "num_classes=None"),
        ({}, lambda m: m(torch.randn(2, 5, 3), torch.zeros(2, dtype=torch.long),
                         {"class_label": torch.tensor([0, 3])}), r"labels in \[0, 3\)"),
        ({}, lambda m: m(torch.randn(2, 5, 3), torch.zeros(2, dtype=torch.long),
                         {"class_label": torch.zeros(2)}), "integer tensor"),
        ({}, lambda m: m(torch.randn(2, 5, 3), torch.zeros(2, dtype=torch.long),
                         {"partial": torch.randn(2, 4, 3)}), "partial_encoder=None"),
        ({"partial_encoder": "tokens"}, lambda m: m(torch.randn(2, 5, 3), torch.zeros(2, dtype=torch.long),
                                                    {"partial": torch.randn(1, 4, 3)}), r"\(2, M, 3\)"),
        ({"partial_encoder": "tokens"}, lambda m: m(torch.randn(2, 5, 3), torch.zeros(2, dtype=torch.long),
                                                    {"partial": torch.randn(2, 0, 3)}), "M=0"),
    ],
)
def test_invalid_inputs_raise(kwargs, call, match):
    model = _tiny(**kwargs)
    with pytest.raises(ValueError, match=match):
        call(model)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"heads": 5}, "heads"),
        ({"width": 0}, "width"),
        ({"time_conditioning": "film"}, "time_conditioning"),
        ({"partial_encoder": "pointnet"}, "partial_encoder"),
        ({"num_classes": 0}, "num_classes"),
        ({"cond_drop_prob": 1.5}, "cond_drop_prob"),
    ],
)
def test_invalid_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _tiny(**kwargs)
