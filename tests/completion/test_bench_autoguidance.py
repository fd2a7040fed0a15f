"""benchmarks/bench_autoguidance.py: the benchmark's training loop with snapshots, and the autoguided denoiser."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def autoguidance():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        path = ROOT / "benchmarks" / "bench_autoguidance.py"
        spec = importlib.util.spec_from_file_location("bench_autoguidance", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def _pairs(bench, shapes: int = 2, scans: int = 3, m: int = 8):
    rng = np.random.default_rng(0)
    dense = [rng.standard_normal((bench.POOL, 3)).astype(np.float32) for _ in range(shapes)]
    partial = torch.from_numpy(rng.standard_normal((shapes * scans, m, 3)).astype(np.float32))
    return dense, partial, torch.arange(shapes).repeat_interleave(scans)


def _tiny(bench):
    torch.manual_seed(0)
    return bench._model(32, 8, 8, 1)


def test_snapshots_copy_the_weights_after_their_step_and_leave_the_training_unchanged(autoguidance):
    bench = autoguidance.bench
    dense, partial, owner = _pairs(bench)
    plain, snapped = _tiny(bench), _tiny(bench)
    bench._train(plain, dense, partial, owner, steps=4, batch=2)
    _, snaps = bench.train_model(snapped, dense, partial, owner, steps=4, batch=2, snapshot_steps=(2, 4))
    assert sorted(snaps) == [2, 4]
    final = snapped.denoiser.state_dict()
    assert all(torch.equal(plain.denoiser.state_dict()[k], v) for k, v in final.items())  # snapshots change nothing
    assert all(torch.equal(snaps[4][k], v) for k, v in final.items())
    assert any(not torch.equal(snaps[2][k], v) for k, v in final.items())
    with pytest.raises(ValueError, match=r"snapshot_steps: expected steps in \[1, 4\], got \[5\]"):
        bench.train_model(_tiny(bench), dense, partial, owner, steps=4, batch=2, snapshot_steps=(2, 5))


def test_the_autoguided_output_is_the_guide_plus_w_times_the_difference(autoguidance):
    model, guide = _tiny(autoguidance.bench).denoiser, _tiny(autoguidance.bench).denoiser
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.1)
    x, t = torch.randn(2, 32, 3), torch.tensor([5, 50])
    m, g = model(x, t), guide(x, t)
    assert not torch.allclose(m, g)
    for scale in (0.0, 1.0, 2.0):
        out = autoguidance.Autoguided(model, guide, scale)(x, t)
        torch.testing.assert_close(out, g + scale * (m - g))
    torch.testing.assert_close(autoguidance.Autoguided(model, guide, 1.0)(x, t), m)
    with pytest.raises(ValueError, match="scale: expected a finite number, got nan"):
        autoguidance.Autoguided(model, guide, float("nan"))


def test_a_guide_with_the_models_own_weights_completes_as_the_model_does(autoguidance):
    bench = autoguidance.bench
    model = _tiny(bench)
    model.fit_normalization([{"points": torch.randn(32, 3), "partial": torch.randn(8, 3)} for _ in range(2)])
    model.eval()
    scan = torch.randn(20, 3) * 0.5
    plain = model.complete(scan, seed=0, steps=3, keep_scan=False).points
    autoguidance.guided(model, {k: v.clone() for k, v in model.denoiser.state_dict().items()}, 2.0)
    assert isinstance(model.denoiser, autoguidance.Autoguided)
    torch.testing.assert_close(model.complete(scan, seed=0, steps=3, keep_scan=False).points, plain)


def test_guide_arguments_are_checked(autoguidance):
    assert autoguidance.parse_guide("1500:2") == (1500, 2.0)
    with pytest.raises(argparse.ArgumentTypeError, match="--guide: expected STEP:W such as 1500:2, got '1500'"):
        autoguidance.parse_guide("1500")
    assert autoguidance.guide_path(Path("runs/m.pt"), 750) == Path("runs/m.guide750.pt")
