"""Configs name building blocks from one closed registry (issue 31 item 1): a model directory, a checkpoint or
its stored run config cannot make shapediff call anything else, and sizes are bounded before anything is built.

The attack reproduced here ran a shell command on ``shapediff.load_model(dir)`` before the registry: one
directory's config named ``shapediff.io_atomic.write_text_atomic`` (writing a protocol-0 pickle as text), a
second named ``shapediff.convert._load.load_foreign_checkpoint(..., trust_pickle=True)`` on that file.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import pkgutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import shapediff
from shapediff.config import BLOCKS, MAX_DEPTH, check_arguments, instantiate, lookup
from shapediff.models import PointCloudDiffusion, ShapeModel, load_model
from shapediff.models.base import build_model
from shapediff.models.checkpoint import atomic_torch_save
from shapediff.models.pretrained import load_pretrained, save_pretrained
from tests.hardening.test_matrix import TINY
from tests.hardening.test_scripts_matrix import DRIVER

ROOT = Path(__file__).resolve().parents[2]
_OPTIONAL = ("open3d", "triton", "matplotlib", "PIL", "hydra", "trimesh", "skimage", "mcubes")


def _public_callables() -> dict[str, object]:
    """Every public callable defined in a shapediff module, by dotted path (module path and attribute)."""
    found = {}
    for info in pkgutil.walk_packages(shapediff.__path__, "shapediff."):
        try:
            module = importlib.import_module(info.name)
        except ImportError as err:  # a module behind an optional dependency that is not installed
            if not any(name in str(err) for name in _OPTIONAL):
                raise
            continue
        for attr in dir(module):
            obj = getattr(module, attr)
            if not attr.startswith("_") and callable(obj) and getattr(obj, "__module__", "").startswith("shapediff"):
                found[f"{info.name}.{attr}"] = obj
    return found


def test_every_public_callable_is_refused_unless_registered():
    callables = _public_callables()
    registered = {b.cls for b in BLOCKS.values()}
    assert len(callables) > 300 and registered  # the walk saw the package
    accepted = []
    for target, obj in callables.items():
        if obj in registered and target in BLOCKS:  # a registered class by its own name (not a re-export elsewhere)
            assert lookup(target, "t").cls is obj
            accepted.append(target)
            continue
        for build in (lambda: instantiate({"_target_": target}, where="cfg"),
                      lambda: build_model(target, {}, "dir")):
            with pytest.raises(ValueError, match=r"expected a registered (building block|model)"):
                build()
    # Exactly the blocks: models, denoisers, processes, autoencoders and datasets.
    assert {lookup(t, "t").kind for t in accepted} == {"model", "denoiser", "process", "autoencoder", "data"}
    assert "shapediff.io_atomic.write_text_atomic" in callables and "shapediff.convert._load.load_foreign_checkpoint" not in accepted


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "torch.load", "shapediff.models.ShapeModel",
                                    "shapediff.models.base.ShapeModel", 42, None, "shapediff.config.instantiate"])
def test_names_outside_the_registry_are_refused(target):
    with pytest.raises(ValueError, match="registered"):
        instantiate({"_target_": target}, where="model.denoiser")


def test_a_model_config_cannot_name_a_block_of_another_kind():
    with pytest.raises(ValueError, match="expected a registered model"):
        build_model("shapediff.denoisers.PointNetDenoiser", {}, "dir")


# ------------------------------------------------------------------------------------------- the attack
def _payload_text(marker: Path) -> str:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return pickle.dumps(Evil(), protocol=0).decode("latin-1")


def _attack_configs(tmp_path: Path) -> list[tuple[str, dict]]:
    """(class, config) pairs of the two-step attack, top level and nested in a model's denoiser node."""
    marker, evil = tmp_path / "PAYLOAD_RAN", tmp_path / "evil.pkl"
    write = ("shapediff.io_atomic.write_text_atomic", {"path": str(evil), "text": _payload_text(marker)})
    run = ("shapediff.convert._load.load_foreign_checkpoint", {"path": str(evil), "what": "x", "trust_pickle": True})
    nested = ("shapediff.models.PointCloudDiffusion",
              {"denoiser": {"_target_": write[0], **write[1]}, "diffusion": dict(TINY["diffusion"])})
    nested_run = ("shapediff.models.PointCloudDiffusion",
                  {"denoiser": {"_target_": run[0], **run[1]}, "diffusion": dict(TINY["diffusion"])})
    return [write, run, nested, nested_run]


def _model_dir(path: Path, cls: str, config: dict, run_config: dict | None = None) -> Path:
    """A real model directory (weights and card of a tiny model) whose config.json says ``cls`` / ``config``."""
    save_pretrained(PointCloudDiffusion(**TINY), path)
    meta = json.loads((path / "config.json").read_text())
    meta.update({"class": cls, "config": config})
    if run_config is not None:
        meta["run_config"] = run_config
    (path / "config.json").write_text(json.dumps(meta))
    return path


def _checkpoint(path: Path, cls: str, config: dict, run_config: dict | None = None) -> Path:
    """A plain dict checkpoint that passes ``torch.load(weights_only=True)``."""
    payload = PointCloudDiffusion(**TINY).checkpoint_payload()
    payload.update({"class": cls, "config": config})
    if run_config is not None:
        payload["run_config"] = run_config
    atomic_torch_save(payload, path)
    assert torch.load(path, weights_only=True)["class"] == cls
    return path


def _assert_nothing_ran(tmp_path: Path) -> None:
    assert not (tmp_path / "evil.pkl").exists(), "write_text_atomic was called"
    assert not (tmp_path / "PAYLOAD_RAN").exists(), "the pickle payload ran"


def test_malicious_model_directory_runs_nothing(tmp_path):
    loaders = [load_model, load_pretrained, PointCloudDiffusion.from_pretrained, ShapeModel.from_pretrained]
    for i, (cls, config) in enumerate(_attack_configs(tmp_path)):
        directory = _model_dir(tmp_path / f"m{i}", cls, config)
        for load in loaders:
            with pytest.raises(ValueError, match="registered") as err:
                load(directory, device="cpu")
            assert "config.json" in str(err.value)
        _assert_nothing_ran(tmp_path)
    # The same files once written by the first step: the second step still cannot unpickle them.
    (tmp_path / "evil.pkl").write_text(_payload_text(tmp_path / "PAYLOAD_RAN"), encoding="latin-1")
    with pytest.raises(ValueError, match="registered"):
        load_model(_model_dir(tmp_path / "again", *_attack_configs(tmp_path)[1]), device="cpu")
    assert not (tmp_path / "PAYLOAD_RAN").exists()


def test_malicious_checkpoint_runs_nothing(tmp_path):
    for i, (cls, config) in enumerate(_attack_configs(tmp_path)):
        path = _checkpoint(tmp_path / f"c{i}.pt", cls, config)
        for load in (load_model, PointCloudDiffusion.load):
            with pytest.raises(ValueError, match="registered") as err:
                load(path, device="cpu")
            assert str(path) in str(err.value)
    _assert_nothing_ran(tmp_path)


def test_malicious_files_through_every_script(tmp_path):
    """sample / complete / evaluate / convert / view on the attack: exit 2 with one ``error:`` line, nothing runs;
    evaluate also refuses a run config whose data node names a function (the model itself being fine)."""
    write, run = _attack_configs(tmp_path)[:2]
    scan = tmp_path / "scan.xyz"
    scan.write_text("\n".join(f"{i * 0.1} {i * 0.05} 0.3" for i in range(20)))
    bad_run, good_run = {"data": {"_target_": write[0], **write[1]}}, {"data": {"_target_": "shapediff.data.SyntheticShapes"}}
    inputs = [_model_dir(tmp_path / "dir", *write, good_run), _checkpoint(tmp_path / "c.pt", *run, good_run),
              _model_dir(tmp_path / "dir_run", "shapediff.models.PointCloudDiffusion", dict(TINY), bad_run),
              _checkpoint(tmp_path / "c_run.pt", "shapediff.models.PointCloudDiffusion", dict(TINY), bad_run)]
    out = tmp_path / "out"
    cases = {"sample.py": [[str(p), "--n", "1", "--steps", "2", "--out", str(out), "--no-preview"] for p in inputs[:2]],
             "complete.py": [[str(p), str(scan), "--out", str(out)] for p in inputs[:2]],
             "evaluate.py": [[str(p), "--n", "2"] for p in inputs],
             "convert.py": [["checkpoint", str(inputs[1]), str(tmp_path / "exported")]]}
    for script, argvs in cases.items():
        proc = subprocess.run([sys.executable, "-c", DRIVER, str(ROOT / "scripts" / script), json.dumps(argvs)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        for argv, result in zip(argvs, json.loads(proc.stdout.strip().splitlines()[-1])):
            lines = [line for line in result["stderr"].splitlines() if line.strip()]
            assert result["code"] == 2 and not result["traceback"], (script, argv, result)
            assert lines[-1].startswith("error:") and "registered" in lines[-1], (script, argv, result["stderr"])
    _assert_nothing_ran(tmp_path)
    assert not (tmp_path / "exported").exists()


# ---------------------------------------------------------------------------- arguments and sizes
def _pointnet(**changes) -> dict:
    return {**TINY["denoiser"], **changes}


@pytest.mark.parametrize("changes, match", [
    ({"width": 60_000}, r"model.denoiser: .*PointNetDenoiser with these settings would hold [\d,]+ parameter"),
    ({"width": 40_000, "depth": 8}, r"would hold"),
    ({"depth": 10 ** 9}, r"model.denoiser.depth: expected an integer in \[-65536, 65536\], got 1000000000"),
    ({"width": "wide"}, r"model.denoiser.width: expected int, got str 'wide'"),
    ({"width": 8.5}, r"model.denoiser.width: expected int, got float"),
    ({"width": True}, r"model.denoiser.width: expected int, got bool"),
    ({"bogus": 1}, r"unknown key\(s\) \['bogus'\]"),
])
def test_arguments_are_checked_before_anything_is_allocated(changes, match):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        instantiate(_pointnet(**changes), where="model.denoiser")
    assert time.perf_counter() - start < 20  # a meta-device dry run, not a 10^12-parameter allocation


def test_process_sizes_and_value_types_are_bounded():
    with pytest.raises(ValueError, match=r"model.diffusion.num_timesteps: expected an integer in \[1, 100000\]"):
        instantiate({"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 10 ** 12}, "model.diffusion")
    with pytest.raises(ValueError, match=r"model.diffusion.schedule: expected plain data"):
        instantiate({"_target_": "shapediff.diffusion.GaussianDiffusion", "schedule": torch.zeros(2)}, "model.diffusion")
    deep: object = 1
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(ValueError, match=f"nested deeper than {MAX_DEPTH}"):
        check_arguments(lookup("shapediff.diffusion.GaussianDiffusion", "t"), {"betas": deep}, "model.diffusion")


def test_huge_width_in_a_model_directory_is_one_error_naming_the_key(tmp_path):
    directory = _model_dir(tmp_path / "m", "shapediff.models.PointCloudDiffusion",
                           {**TINY, "denoiser": _pointnet(width=60_000)})
    with pytest.raises(ValueError, match=r"config.json': its config does not build a shapediff.models.PointCloudDiffusion: "
                                         r"model.denoiser: .*PointNetDenoiser.*would hold") as err:
        load_model(directory, device="cpu")
    assert "\n" not in str(err.value)
    (directory / "config.json").write_text(json.dumps({**json.loads((directory / "config.json").read_text()),
                                                      "config": {**TINY, "denoiser": _pointnet(width=2 ** 40)}}))
    with pytest.raises(ValueError, match=r"config.json': .*: config.denoiser.width: expected an integer in \[-65536, 65536\]"):
        load_model(directory, device="cpu")


def test_registered_targets_of_old_files_keep_loading(tmp_path):
    """Old names (module paths, a class that moved) map to the same registry entries."""
    old = {**TINY, "denoiser": {"_target_": "shapediff.models.completion.KnownIndicatorDenoiser", "num_known": 16,
                                "denoiser": {**_pointnet(), "_target_": "shapediff.denoisers.pointnet.PointNetDenoiser",
                                             "in_channels": 4}},
           "diffusion": {**TINY["diffusion"], "_target_": "shapediff.diffusion.gaussian_diffusion.GaussianDiffusion"},
           "completion": "pvd"}
    model = PointCloudDiffusion(**old)
    payload = model.checkpoint_payload()
    payload["class"] = "shapediff.models.point_cloud.PointCloudDiffusion"
    atomic_torch_save(payload, tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt", device="cpu")
    assert type(loaded.denoiser).__name__ == "KnownIndicatorDenoiser" and loaded.config == model.config
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
