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
from tests.anchors import rel_l2
from tests.anchors import load_fixture as load_anchor_fixture


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def load_fixture(name: str) -> dict:
    return load_anchor_fixture(name, "PVD's own code")


def fixture_network(fx: dict, variant: str) -> torch.nn.Module:
    net = instantiate(pvd_network_config(variant, width_multiplier=fx["kwargs"]["width_multiplier"]))
    net.load_state_dict(pvd_state_dict_to_shapediff(fx["state_dict"]), strict=True)
    return net.eval()


def _cases():
    """(fixture, variant, case index, dtype); the first case of each runs by default, the rest are slow
    (a width-0.25 forward on 2048 points takes ~3 s in float32 and ~10 s in float64 on one core)."""
    out = []
    for name, variant, count in (("pvd_generation_w025", "generation", 3), ("pvd_completion_w025", "completion", 2)):
        for case in range(count):
            for dtype in ("float32", "float64"):
                fast = case == 0 and (dtype == "float32" or variant == "generation")
                out.append(pytest.param(name, variant, case, dtype, marks=() if fast else pytest.mark.slow,
                                        id=f"{variant}-{case}-{dtype}"))
    return out


@pytest.fixture(scope="module")
def networks():
    return {}


def _net(networks, name, variant):
    if name not in networks:
        fx = load_fixture(name)
        networks[name] = (fx, fixture_network(fx, variant))
    return networks[name]


@pytest.mark.parametrize("name, variant, case, dtype", _cases())
def test_outputs_and_fps_centres_match_pvds(networks, name, variant, case, dtype, monkeypatch):
    """float64 within 1e-10 relative L2 of PVD's float64 run (sinusoid in float64), float32 within 1e-5
    of PVD's float32 run; FPS centres at every SA stage identical to PVD's, ties included."""
    import shapediff.denoisers.pvcnn as pvcnn

    fx, net = _net(networks, name, variant)
    c = fx["cases"][case]
    chosen, sample = [], pvcnn._sample_centres

    def recording(*args, **kwargs):
        chosen.append(sample(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(pvcnn, "_sample_centres", recording)
    torch_dtype = getattr(torch, dtype)
    try:
        with torch.no_grad():
            out = net.to(torch_dtype)(c["inputs"].to(torch_dtype), c["t"])
    finally:
        net.float()
    expected, bound = (c["outputs_float64_sinusoid64"], 1e-10) if dtype == "float64" else (c["outputs_float32"], 1e-5)
    err = rel_l2(out, expected)
    print(f"{name} {c['name']} {dtype} rel L2 {err:.2e}")
    assert len(chosen) == 4
    for stage, (ours, theirs) in enumerate(zip(chosen, c["fps_indices"])):
        assert torch.equal(ours, theirs), f"SA stage {stage}: FPS centres differ from PVD's"
    assert err < bound


def test_pvd_sinusoid_is_pvds():
    """float32: bit for bit (PVD rounds numpy float64 frequencies to float32); float64: to rounding."""
    from shapediff.nn import timestep_embedding

    fx = load_fixture("pvd_generation_w025")
    for c in fx["cases"]:
        torch.testing.assert_close(timestep_embedding(c["t"], 64, convention="pvd"), c["sinusoid_float32"], rtol=0, atol=0)
        torch.testing.assert_close(timestep_embedding(c["t"], 64, convention="pvd", dtype=torch.float64),
                                   c["sinusoid_float64"], rtol=0, atol=1e-12)


def test_pvd_yaml_layout_is_the_converter_layout():
    """configs/model/pvcnn_pvd.yaml and pvd_network_config("generation") describe the same network."""
    from pathlib import Path

    from omegaconf import OmegaConf

    yaml = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[2] / "configs/model/pvcnn_pvd.yaml"))
    ours = pvd_network_config("generation")
    for key, value in ours.items():
        if key not in ("sa_blocks", "fp_blocks"):
            assert yaml[key] == value, key
