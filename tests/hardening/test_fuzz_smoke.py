"""A ~5 s run of scripts/fuzz_readers.py: the harness works and the readers hold up.

Any finding (a crash, an unsound result, a message not naming the file, a hang, an executed pickle
payload) fails the test.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fuzz_readers.py"


def _load():
    spec = importlib.util.spec_from_file_location("fuzz_readers", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.open3d  # the fuzzed readers include Open3D's (compressed .pcd)
def test_fuzz_readers_smoke(tmp_path):
    mod = _load()
    res = mod.fuzz(5.0, seed=1, timeout=20.0, keep=tmp_path / "findings", verbose=False)
    assert res["reads"] >= 50, res  # the harness actually exercised the readers
    assert sum(res["outcomes"].values()) == res["reads"]
    assert res["outcomes"].get("expected", 0) > 0 and res["outcomes"].get("ok", 0) > 0, res
    for reader in ("load_points", "load_mesh", "load_checkpoint"):
        assert any(k.startswith(reader) for k in res["per_reader"]), res["per_reader"]
    assert not res["findings"], res["findings"]


def test_mutate_changes_bytes_and_describes():
    import random

    mod = _load()
    rnd = random.Random(0)
    data = b"ply\nformat ascii 1.0\nelement vertex 3\nend_header\n0 0 0\n1 1 1\n2 2 2\n"
    outs = [mod.mutate(data, rnd) for _ in range(50)]
    assert sum(out != data for out, _ in outs) >= 45
    assert all(desc for _, desc in outs)
