"""The interactive window (issue 31 item 5): where Open3D's new renderer cannot start (under Xvfb with Mesa's
OpenGL: "Failed to load vulkan library!"), ``scripts/view.py PATH`` opens Open3D's legacy OpenGL window instead,
saying so in one line; without any display it is one line and exit status 2. Needs ``xvfb-run`` (a test-only tool,
installed by .ci/run) and Open3D."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
needs_xvfb = pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run is not installed (apt-get install xvfb)")


def _files(tmp_path: Path) -> list[str]:
    import trimesh

    from shapediff.geometry import save_points

    save_points(tmp_path / "cloud.ply", np.random.default_rng(0).normal(size=(200, 3)))
    trimesh.creation.box().export(tmp_path / "box.obj")
    return [str(tmp_path / "cloud.ply"), str(tmp_path / "box.obj")]


def _under_xvfb(args: list[str], marker: str | None) -> tuple[bool, str]:
    """Run ``args`` on a fresh Xvfb display until it prints ``marker`` on stderr, then 3 s more (20 s for no marker:
    past its imports): (still running, i.e. showing its window; what it printed). The process group is then killed."""
    proc = subprocess.Popen(["xvfb-run", "-a", *args], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    seen, deadline = "", time.monotonic() + 180
    try:
        while marker is not None and marker not in seen and time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([proc.stderr], [], [], 1.0)
            if ready:
                seen += proc.stderr.readline()
        time.sleep(3 if marker is not None else 20)
        alive = proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return alive, seen + proc.stderr.read()


@pytest.mark.open3d
@needs_xvfb
def test_view_falls_back_to_the_legacy_opengl_window(tmp_path):
    alive, stderr = _under_xvfb([sys.executable, "scripts/view.py", *_files(tmp_path)], "show:")
    assert alive, stderr[-2000:]  # the window is open: view.py waits in its event loop
    lines = [line for line in stderr.splitlines() if line.startswith("show:")]
    assert len(lines) == 1 and "in its OpenGL (legacy) window" in lines[0] and "cloud, box" in lines[0], stderr
    assert "Traceback" not in stderr


@pytest.mark.open3d
@needs_xvfb
def test_the_legacy_window_opens_in_a_child_process(tmp_path):
    """After a failed start of the new renderer the window opens in a fresh process (``python -m
    shapediff.viz.viewer``): the same process's legacy window would crash (GLFW left without a context)."""
    items = tmp_path / "items.npz"
    np.savez(items, points_0=np.random.default_rng(0).normal(size=(50, 3)), faces_0=np.zeros((0, 3), np.int32),
             color_0=np.array([[0.2, 0.4, 0.8]]))
    alive, stderr = _under_xvfb([sys.executable, "-m", "shapediff.viz.viewer", str(items), "t"], None)
    assert alive and "Traceback" not in stderr, stderr[-2000:]


def test_without_a_display_view_says_so_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    done = subprocess.run([sys.executable, "scripts/view.py", str(tmp_path / "x.ply")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "needs a display" in lines[0], done.stderr
