"""Bad --samples / --refs files (issue 31 item 7): the shared reader (evaluation.released.load_cloud_file) turns
each into one ValueError naming the file, and scripts/evaluate.py into one ``error:`` line with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shapediff.evaluation.released import load_cloud_file
from tests.hardening.test_scripts_matrix import DRIVER

ROOT = Path(__file__).resolve().parents[2]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo PAYLOAD_RAN",))


def _bad_files(d: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, the words its error must contain)."""
    np.savez(d / "empty.npz")
    torch.save({"ref": _Evil()}, d / "pickled.pt")
    (d / "clouds.txt").write_text("0 0 0\n1 1 1\n")
    dense = torch.zeros(2, 4, 3)
    dense[0, 0] = 1
    torch.save(dense.to_sparse(), d / "sparse.pt")
    np.save(d / "complex.npy", np.ones((2, 4, 3)) + 1j)
    (d / "garbage.pt").write_bytes(b"PK\x03\x04 a cut zip archive")
    return {"empty.npz": (d / "empty.npz", "holds no arrays"),
            "pickled.pt": (d / "pickled.pt", "refused: it holds pickled objects other than tensors"),
            "clouds.txt": (d / "clouds.txt", "expected a point-cloud set file ending in .npy, .npz, .pt, .pth"),
            "sparse.pt": (d / "sparse.pt", "expected a dense (S, N, 3) tensor, got a torch.sparse_coo tensor"),
            "complex.npy": (d / "complex.npy", "expected real point coordinates, got dtype complex128"),
            "garbage.pt": (d / "garbage.pt", "could not read a point-cloud set")}


def test_each_bad_file_is_one_error_naming_it(tmp_path):
    for name, (path, words) in _bad_files(tmp_path).items():
        with pytest.raises(ValueError) as err:
            load_cloud_file(path)
        assert words in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value), (name, err.value)


def test_evaluate_script_says_one_line_and_runs_nothing(tmp_path):
    files = _bad_files(tmp_path)
    good = tmp_path / "good.npy"
    np.save(good, np.random.default_rng(0).normal(size=(4, 16, 3)).astype(np.float32))
    cases = [["--samples", str(path), "--refs", str(good)] for path, _ in files.values()]
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(ROOT / "scripts" / "evaluate.py"), json.dumps(cases)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "PAYLOAD_RAN" not in proc.stdout + proc.stderr, proc.stderr[-2000:]
    for (name, (_, words)), result in zip(files.items(), json.loads(proc.stdout.strip().splitlines()[-1])):
        errors = [line for line in result["stderr"].splitlines() if line.startswith("error:")]
        assert result["code"] == 2 and not result["traceback"] and len(errors) == 1 and words in errors[0], (name, result)
