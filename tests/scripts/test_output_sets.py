"""``sample.py`` / ``complete.py --out DIR`` write their outputs as one set (issue 31 item 6): a second run
replaces the first run's files whole (no stale ``sample_*.ply`` beside new ``samples.pt``), a folder holding
other files is refused before anything is written, and a run that fails leaves the previous set as it was."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from shapediff.models import PointCloudDiffusion
from tests.hardening.test_matrix import TINY
from tests.hardening.test_scripts_matrix import DRIVER

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, cases: list[list[str]]) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(ROOT / "scripts" / script), json.dumps(cases)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_sample_and_complete_replace_their_output_folder_whole(tmp_path):
    torch.manual_seed(0)
    ckpt = PointCloudDiffusion(**TINY).save(tmp_path / "m.pt")
    out, mine = tmp_path / "samples", tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    first, second, refused = _run("sample.py", [
        [str(ckpt), "--n", "3", "--steps", "2", "--out", str(out), "--no-preview"],
        [str(ckpt), "--n", "1", "--steps", "2", "--out", str(out), "--no-preview", "--seed", "1"],
        [str(ckpt), "--n", "1", "--steps", "2", "--out", str(mine), "--no-preview"]])
    assert first["code"] in (0, None) and second["code"] in (0, None), (first, second)
    assert _visible(out) == ["sample_000.ply", "samples.pt"]  # the first run's sample_001/002 are gone
    assert torch.load(out / "samples.pt", weights_only=True).shape[0] == 1
    assert refused["code"] == 2 and not refused["traceback"]
    assert refused["stderr"].strip().splitlines()[-1].startswith(f"error: --out {str(mine)!r}: holds files")
    assert _visible(mine) == ["notes.txt"] and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    scans = []
    for name in ("chair_a", "chair_b"):
        scans.append(tmp_path / f"{name}.xyz")
        scans[-1].write_text("\n".join(f"{i * 0.1:.2f} {i * 0.05:.2f} {0.3 - i * 0.01:.2f}" for i in range(20)))
    out = tmp_path / "completions"
    results = _run("complete.py", [[str(ckpt), str(scan), "--n", "1", "--steps", "2", "--out", str(out), "--no-preview",
                                    "--no-mesh"] for scan in scans])
    assert all(r["code"] in (0, None) for r in results), results
    assert _visible(out) == ["chair_b"]  # the first run's chair_a/ does not stay beside the second run's
    assert "partial.ply" in _visible(out / "chair_b")
