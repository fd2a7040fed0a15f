"""KnownIndicatorDenoiser(scan_code=D): a code of the known points alone reaches the inner denoiser as its summary."""

import pytest
import torch

from shapediff.denoisers import KnownIndicatorDenoiser, PointNetDenoiser
from shapediff.models import PointCloudDiffusion, load_model

M, N, D = 6, 16, 8


def _wrapped(scan_code: int = D, summary_dim: int = D) -> KnownIndicatorDenoiser:
    torch.manual_seed(0)
    inner = PointNetDenoiser(in_channels=4, width=16, depth=1, time_embed_dim=8, summary_dim=summary_dim)
    net = KnownIndicatorDenoiser(inner, num_known=M, scan_code=scan_code)
    with torch.no_grad():  # the inner output head starts at zero: make the output depend on its inputs
        inner.out.weight.normal_(0.0, 0.1)
    return net.eval()


@pytest.mark.parametrize("bad", [-1, 2.0, True, "8"])
def test_scan_code_rejects_what_is_not_a_width(bad):
    with pytest.raises(ValueError, match="scan_code: expected an int >= 0"):
        KnownIndicatorDenoiser(PointNetDenoiser(in_channels=4, width=16, depth=1), num_known=M, scan_code=bad)


def test_scan_code_needs_an_inner_denoiser_that_takes_it_as_its_summary():
    with pytest.raises(ValueError, match=r"scan_code: .*summary_dim=8\), got scan_code=8 with summary_dim=0"):
        KnownIndicatorDenoiser(PointNetDenoiser(in_channels=4, width=16, depth=1), num_known=M, scan_code=8)
    with pytest.raises(ValueError, match="summary_dim=4"):
        KnownIndicatorDenoiser(PointNetDenoiser(in_channels=4, width=16, depth=1, summary_dim=4), num_known=M, scan_code=8)


def test_a_summary_of_ones_own_is_refused_where_the_scan_code_is_the_summary():
    net, x, t = _wrapped(), torch.randn(2, N, 3), torch.tensor([3, 7])
    with pytest.raises(ValueError, match=r"cond\['summary'\]: .*pass no summary of your own"):
        net(x, t, {"summary": torch.zeros(2, D)})


def test_the_code_reads_the_known_points_only():
    """The summary the inner network receives is the encoder's code of the first M points: moving the noisy points
    leaves it as it was, moving the known points changes it."""
    net = _wrapped()
    seen = []
    net.denoiser.register_forward_pre_hook(lambda mod, args: seen.append(args[2]["summary"]))
    x, t = torch.randn(2, N, 3), torch.tensor([3, 7])
    moved, other = x.clone(), x.clone()
    moved[:, M:] += 1.0
    other[:, :M] *= 2.0
    for cloud in (x, moved, other):
        net(cloud, t)
    assert torch.equal(seen[0], net.scan_encoder(x[:, :M]))
    assert torch.equal(seen[0], seen[1])
    assert not torch.allclose(seen[0], seen[2])


def test_scan_code_zero_is_the_flag_alone_with_the_former_parameters():
    plain = KnownIndicatorDenoiser(PointNetDenoiser(in_channels=4, width=16, depth=1), num_known=M)
    assert plain.scan_encoder is None and plain.scan_code == 0
    assert not any(k.startswith("scan_encoder") for k in plain.state_dict())


def test_a_completion_model_with_a_scan_code_trains_saves_loads_and_keeps_the_scan(tmp_path):
    torch.manual_seed(0)
    model = PointCloudDiffusion(
        denoiser={"_target_": "shapediff.denoisers.KnownIndicatorDenoiser", "num_known": M, "scan_code": D,
                  "denoiser": {"_target_": "shapediff.denoisers.PointNetDenoiser", "in_channels": 4, "width": 16,
                               "depth": 1, "summary_dim": D}},
        diffusion={"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 20, "prediction": "v"},
        num_points=N, completion="pvd", num_partial_points=M, sampler={"name": "ddpm", "steps": 5}, frame="scan")
    batch = {"points": torch.randn(4, N, 3), "partial": torch.randn(4, M, 3)}
    model.fit_normalization([{k: v[i] for k, v in batch.items()} for i in range(4)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.denoiser.scan_encoder.parameters()]
    for _ in range(3):
        loss = model.training_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.denoiser.scan_encoder.parameters()))
    model.save(tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt", device="cpu").eval()
    scan = torch.randn(40, 3)
    out, again = model.eval().complete(scan, seed=0).points, loaded.complete(scan, seed=0).points
    assert torch.equal(out, again)
    assert torch.equal(out[0, 0, :40], scan)
