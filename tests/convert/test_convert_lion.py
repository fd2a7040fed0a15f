"""scripts/convert.py lion: LION checkpoints saved as LION saves them -> model directories -> loaded -> LION's
recorded outputs; full-width key coverage; the EMA weights LION evaluates with; one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

import shapediff
from shapediff.convert.lion import (LION_LICENSE_NOTE, detect_lion_config, lion_ema_state, lion_to_shapediff,
                                    shapediff_to_lion)
from shapediff.models.lion import LionModel
from tests.anchors import load_fixture, rel_l2
from tests.convert.test_convert import convert, convert_here

RECORDED = "LION (nv-tlabs/LION @ 7711b3d) on CPU"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def lion_optimizer_state(dae_state: dict, ema: dict) -> dict:
    """``dae_optimizer.state_dict()`` as LION's EMA-wrapped Adam saves it: one group over ``dae.parameters()``
    (the order of ``dae_state_dict``), per-parameter Adam moments and the ``ema`` copy."""
    keys = list(dae_state)
    state = {i: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(dae_state[k]),
                 "exp_avg_sq": torch.zeros_like(dae_state[k]), "ema": ema[k]} for i, k in enumerate(keys)}
    return {"state": state, "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.99), "params": list(range(len(keys)))}]}


@pytest.mark.parametrize("category", ["chair", "airplane", "car"])
def test_full_width_key_coverage(category):
    """Every tensor of the released configurations' checkpoints is consumed, none invented, shapes equal, and the
    parameter counts are LION's (chair: VAE 22,402,731; global prior 77,173,376; latent-point prior 11,420,740)."""
    keys = load_fixture("lion_fullwidth_keys", RECORDED)["categories"][category]
    vae = {k: torch.empty(s) for k, s in keys["vae_state_dict_shapes"].items()}
    dae = {k: torch.empty(s) for k, s in keys["dae_state_dict_shapes"].items()}
    assert (len(vae), len(dae)) == (867, 462)
    model = LionModel(**detect_lion_config(vae, dae))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapped = {k: tuple(v.shape) for k, v in lion_to_shapediff(vae, dae).items()}
    own = {k for k in ours if k.startswith("normalizer.") or k == "vae_steps"}  # shapediff's, not LION's
    assert set(ours) - own == set(mapped) and all(ours[k] == mapped[k] for k in mapped)
    back_vae, back_dae = shapediff_to_lion(lion_to_shapediff(vae, dae))
    assert list(back_vae) == list(vae) and list(back_dae) == list(dae)
    counts = keys["num_parameters"]
    assert sum(p.numel() for p in model.vae.parameters()) == counts["vae"]
    assert sum(p.numel() for p in model.priors[0].parameters()) == counts["global_prior"]
    assert sum(p.numel() for p in model.priors[1].parameters()) == counts["local_prior"]


def test_ema_weights_from_the_optimizer():
    """The EMA copy of parameter k of LION's optimizer is the k-th key of dae_state_dict; a parameter without one
    keeps its raw value (LION's swap skips it); a shape mismatch is an error naming the key."""
    dae = {"0.a.weight": torch.zeros(3, 2), "0.a.bias": torch.zeros(3), "1.b.weight": torch.zeros(4)}
    ema = {k: torch.full_like(v, float(i + 1)) for i, (k, v) in enumerate(dae.items())}
    opt = lion_optimizer_state(dae, ema)
    del opt["state"][1]["ema"]
    out, used = lion_ema_state(dae, opt)
    assert used == 2 and torch.equal(out["0.a.weight"], ema["0.a.weight"]) and torch.equal(out["0.a.bias"], dae["0.a.bias"])
    assert torch.equal(out["1.b.weight"], ema["1.b.weight"])
    opt["state"][2]["ema"] = torch.zeros(5)
    with pytest.raises(ValueError, match="1.b.weight"):
        lion_ema_state(dae, opt)


@pytest.fixture(scope="module")
def lion_checkpoint(tmp_path_factory):
    """The fixtures' weights saved as LION's trainer saves a checkpoint; the optimizer's EMA copy is the fixture's
    weights (what LION samples with) and dae_state_dict holds different raw weights."""
    vae_fx = load_fixture("lion_vae_w025", RECORDED)
    priors_fx = load_fixture("lion_priors_w025", RECORDED)
    ema = priors_fx["state_dict"]
    raw = {k: v + 0.05 for k, v in ema.items()}
    path = tmp_path_factory.mktemp("lion") / "model.pt"
    torch.save({"epoch": 800, "global_step": 1, "vae_state_dict": vae_fx["state_dict"], "dae_state_dict": raw,
                "dae_optimizer": lion_optimizer_state(raw, ema), "vae_optimizer": {"state": {}, "param_groups": []},
                "grad_scalar": {}}, path)
    return path, priors_fx


def test_convert_lion_checkpoint_matches_lion(lion_checkpoint, tmp_path, capsys):
    """convert.py lion -> load_model -> the latent-point prior reproduces LION's recorded output with the EMA
    weights; the card carries the licence; save_pretrained round-trips; --no-ema takes dae_state_dict."""
    path, priors_fx = lion_checkpoint
    out = tmp_path / "lion_dir"
    res = convert("lion", path, out, "--category", "chair", "--stats", "0", "0", "0", "1", "--num-points", "2048")
    assert res.returncode == 0, res.stderr
    model = shapediff.load_model(out, device="cpu")
    assert isinstance(model, LionModel)
    case = priors_fx["cases"][0]
    with torch.no_grad():
        eps = model.prior_eps(1, case["local_inputs"].reshape(2, 2048, 4), case["t_index"], case["style"])
        glob = model.prior_eps(0, case["global_inputs"][:, :, 0, 0], case["t_index"])
    assert rel_l2(eps.reshape(2, -1), case["local_outputs_float32"].reshape(2, -1)) < 1e-5
    assert rel_l2(glob, case["global_outputs_float32"][:, :, 0, 0]) < 1e-5
    card = json.loads((out / "config.json").read_text())
    assert "non-commercial" in json.dumps(card) and "non-commercial" in (out / "README.md").read_text()
    assert LION_LICENSE_NOTE in (out / "README.md").read_text()
    again = shapediff.load_model(model.save_pretrained(tmp_path / "again"), device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    raw_dir = tmp_path / "raw"
    assert convert_here(capsys, "lion", path, raw_dir, "--stats", "0", "0", "0", "1", "--no-ema").returncode == 0
    raw = shapediff.load_model(raw_dir, device="cpu")
    assert torch.allclose(raw.priors[0].input_layer.weight, model.priors[0].input_layer.weight + 0.05)


def test_convert_lion_errors(tmp_path, capsys, lion_checkpoint):
    """One line each: a file that is not a LION checkpoint, no normalisation, no EMA state, a missing file."""
    other = tmp_path / "other.pt"
    torch.save({"model_state": {"w": torch.zeros(1)}}, other)
    res = convert_here(capsys, "lion", other, tmp_path / "o", "--stats", "0", "0", "0", "1")
    assert res.returncode == 2 and "expected a LION checkpoint" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    path, _ = lion_checkpoint
    res = convert_here(capsys, "lion", path, tmp_path / "o")
    assert res.returncode == 2 and "normalisation" in res.stderr
    ckpt = torch.load(path, weights_only=True)
    del ckpt["dae_optimizer"]
    no_ema = tmp_path / "no_ema.pt"
    torch.save(ckpt, no_ema)
    res = convert_here(capsys, "lion", no_ema, tmp_path / "o", "--stats", "0", "0", "0", "1")
    assert res.returncode == 2 and "--no-ema" in res.stderr
    res = convert_here(capsys, "lion", tmp_path / "missing.pt", tmp_path / "o", "--stats", "0", "0", "0", "1")
    assert res.returncode == 2 and "no such file" in res.stderr
