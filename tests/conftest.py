"""Shared pytest fixtures: seeds, the shared real-data folder, CUDA skipping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Scripts run as subprocesses import this working tree's package, whatever (if any) install points elsewhere.
_ROOT = str(Path(__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join([_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])

# Without CUDA, Triton kernels run in Triton's interpreter on CPU tensors (tests/geometry/test_triton_kernels.py).
# Triton reads this when it is first imported, so it is set before anything imports it.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Real meshes and scans made by others live beside the project (never copied into it).
SHARED_DATA = Path(os.environ.get("SHAPEDIFF_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Run a test with one torch thread: many tiny ops are several times faster that way on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared_data() -> Path:
    """Path to ../shared/data; skips the test with a reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared real data not found at {SHARED_DATA} (set SHAPEDIFF_SHARED_DATA)")
    return SHARED_DATA


def _open3d_skip_reason() -> str | None:
    from shapediff._optional import require_open3d

    try:
        require_open3d()
    except ImportError as err:
        return f"needs Open3D, which cannot be imported here: {err}"
    return None


def pytest_collection_modifyitems(config, items):
    if any(item.get_closest_marker("open3d") for item in items):
        reason = _open3d_skip_reason()  # imports Open3D only when a collected test needs it
        if reason:
            for item in items:
                if item.get_closest_marker("open3d"):
                    item.add_marker(pytest.mark.skip(reason=reason))
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
