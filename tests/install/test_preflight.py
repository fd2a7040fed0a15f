"""shapediff.preflight: scripts stop before any long work, with one `error:` line and exit status 2."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from shapediff import preflight
from shapediff.preflight import PreflightError
from tests.install.conftest import ROOT, run_script


def _config(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="train", overrides=list(overrides)), resolve=True)


def test_writable_folder(tmp_path):
    assert preflight.check_writable_folder(tmp_path / "a" / "b", "run_dir").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(PreflightError, match="run_dir: File exists: .* is a file"):
        preflight.check_writable_folder(tmp_path / "file", "run_dir")
    with pytest.raises(PreflightError, match="run_dir: cannot write"):
        preflight.check_writable_folder(tmp_path / "file" / "sub", "run_dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(PreflightError, match="cannot write"):
            preflight.check_writable_folder(tmp_path, "--out")
    finally:
        tmp_path.chmod(0o700)


def test_existing_paths(tmp_path):
    with pytest.raises(PreflightError, match="data.root: no such folder .*nope'"):
        preflight.check_existing_folder(tmp_path / "nope", "data.root")
    with pytest.raises(PreflightError, match="checkpoint: .* is a directory, expected a file"):
        preflight.check_existing_file(tmp_path, "checkpoint")


def test_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(preflight.sys, "platform", "linux")
    with pytest.raises(PreflightError, match="needs a display"):
        preflight.check_display("the viewer")
    monkeypatch.setenv("DISPLAY", ":0")
    preflight.check_display("the viewer")


def test_open3d_missing_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(preflight, "open3d_available", lambda: False)
    monkeypatch.setattr(preflight, "require_open3d", lambda: (_ for _ in ()).throw(ImportError("blocked")))
    with pytest.raises(PreflightError, match="virtual scans needs Open3D: blocked"):
        preflight.check_open3d("virtual scans")


def test_which_configs_need_open3d():
    assert preflight.open3d_needs_of_config(_config("experiment=quickstart")) == []
    needs = preflight.open3d_needs_of_config(_config("experiment=completion_quickstart"))
    assert needs == ["data: virtual partial scans (ray casting or hidden-point removal)"]
    assert preflight.open3d_needs_of_config(_config("data=shapenet_tsdf", "data.base.root=/x")) == [
        "data: TSDF grids of meshes (source=mesh)"]


@pytest.mark.slow  # a fresh Python process with torch and Hydra
def test_train_stops_before_training_on_a_missing_data_root(tmp_path):
    run_dir = tmp_path / "run"
    out = run_script(["scripts/train.py", "experiment=quickstart", "data=shapenet_pc15k",
                      f"data.root={tmp_path / 'missing'}", f"run_dir={run_dir}"], dict(os.environ), timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == f"error: data.root: no such folder {str(tmp_path / 'missing')!r}"
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["scripts/sample.py", "{tmp}/none.pt"], "checkpoint: no such file"),
    (["scripts/complete.py", "{tmp}/none.pt", "{tmp}/scan.npy"], "checkpoint: no such file"),
    (["scripts/evaluate.py", "{tmp}/none.pt", "--data-root", "{tmp}/nowhere"], "checkpoint: no such file"),
    (["scripts/view.py", "{tmp}"], "the interactive viewer (scripts/view.py without --out or --web) needs a display"),
])
def test_scripts_fail_fast(tmp_path, args, message):
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    out = run_script([a.format(tmp=tmp_path) for a in args], env, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(("error: ", "view.py: ")) and message in last, last
