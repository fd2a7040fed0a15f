"""PVCNN2 in PVD's layout against PVD's own outputs (``../shared/data/anchor_fixtures/pvd_*_w025.pt``).

The fixtures hold a width-0.25 PVD network's weights in PVD's checkpoint keys and the outputs of PVD's
own forward (its CUDA ops replaced by loop-exact CPU transcriptions) in float32 and float64, on normal
and tie-heavy (1/32-grid) inputs, with the FPS centres PVD chose. See the fixtures' README/SOURCE.txt.
"""

from __future__ import annotations

import pytest
import torch

from shapediff.convert.pvd import pvd_network_config, pvd_state_dict_to_shapediff
from shapediff.config import instantiate
from tests.conftest import SHARED_DATA

FIXTURES = SHARED_DATA / "anchor_fixtures"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def load_fixture(name: str) -> dict:
    path = FIXTURES / f"{name}.pt"
    if not path.is_file():
        pytest.skip(f"anchor fixture {path} not found (recorded from PVD's own code; see ../shared/data/anchor_fixtures)")
    return torch.load(path, weights_only=True)


def fixture_network(fx: dict, variant: str) -> torch.nn.Module:
    net = instantiate(pvd_network_config(variant, width_multiplier=fx["kwargs"]["width_multiplier"]))
    net.load_state_dict(pvd_state_dict_to_shapediff(fx["state_dict"]), strict=True)
    return net.eval()


CASES = [("pvd_generation_w025", "generation", i) for i in range(3)] + [("pvd_completion_w025", "completion", i) for i in range(2)]


@pytest.fixture(scope="module")
def networks():
    return {}


def _net(networks, name, variant):
    if name not in networks:
        fx = load_fixture(name)
        networks[name] = (fx, fixture_network(fx, variant))
    return networks[name]


@pytest.mark.parametrize("name, variant, case", CASES)
def test_float64_matches_pvd_to_1e10(networks, name, variant, case):
    fx, net = _net(networks, name, variant)
    c = fx["cases"][case]
    with torch.no_grad():
        out = net.double()(c["inputs"].double(), c["t"])
    net.float()
    err = rel_l2(out, c["outputs_float64_sinusoid64"])
    print(f"{name} {c['name']} float64 rel L2 {err:.2e}")
    assert err < 1e-10


@pytest.mark.parametrize("name, variant, case", CASES)
def test_float32_matches_pvd_to_1e5(networks, name, variant, case):
    fx, net = _net(networks, name, variant)
    c = fx["cases"][case]
    with torch.no_grad():
        out = net(c["inputs"], c["t"])
    err = rel_l2(out, c["outputs_float32"])
    print(f"{name} {c['name']} float32 rel L2 {err:.2e}")
    assert err < 1e-5


@pytest.mark.parametrize("name, variant, case", CASES)
def test_fps_centres_are_pvds(networks, name, variant, case, monkeypatch):
    import shapediff.denoisers.pvcnn as pvcnn

    fx, net = _net(networks, name, variant)
    c = fx["cases"][case]
    chosen, sample = [], pvcnn._sample_centres

    def recording(*args, **kwargs):
        chosen.append(sample(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(pvcnn, "_sample_centres", recording)
    with torch.no_grad():
        net(c["inputs"], c["t"])
    assert len(chosen) == 4
    for ours, theirs in zip(chosen, c["fps_indices"]):
        assert torch.equal(ours, theirs)


def test_pvd_sinusoid_is_pvds(networks):
    from shapediff.nn import timestep_embedding

    fx = load_fixture("pvd_generation_w025")
    for c in fx["cases"]:
        torch.testing.assert_close(timestep_embedding(c["t"], 64, convention="pvd"), c["sinusoid_float32"], rtol=0, atol=0)
        torch.testing.assert_close(timestep_embedding(c["t"], 64, convention="pvd", dtype=torch.float64),
                                   c["sinusoid_float64"], rtol=1e-14, atol=1e-14)
