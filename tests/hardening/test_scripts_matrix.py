"""Bad input through the scripts a user runs (issue 11): a missing / corrupt / wrong-family / pickle
checkpoint, a bad partial or viewer file, an unknown config key, a missing data root, an output path
that is a file. Each must end with exit status 2 (``shapediff.cli.USER_ERROR``) and a short ``error:``
message naming the file or argument, never a Python traceback; a diverged training run exits 1.

Cases run through each script's real ``__main__`` block (``runpy``, so ``shapediff.cli.run_main``
is exercised) in one child process per script, to keep the suite fast; train.py runs as its own
process per case (Hydra holds global state).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shapediff.cli import RUNTIME_FAILURE, USER_ERROR
from shapediff.models import PointCloudDiffusion
from tests.hardening.test_matrix import TINY

ROOT = Path(__file__).resolve().parents[2]

DRIVER = r"""
import contextlib, io, json, os, runpy, sys, traceback
script, cases = sys.argv[1], json.loads(sys.argv[2])
results = []
for argv in cases:
    err = io.StringIO()
    sys.argv = [script, *argv]
    code, tb = None, ""
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as e:
            code = e.code
        except BaseException:
            tb = traceback.format_exc()
    results.append({"code": code, "stderr": err.getvalue(), "traceback": tb})
print(json.dumps(results), flush=True)
os._exit(0)  # skip Open3D's renderer teardown, which aborts after several renders in one process
"""


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo PAYLOAD_RAN",))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad_inputs")
    f = {name: d / name for name in ("ok.pt", "corrupt.pt", "wrong_family.pt", "pickle.pt", "no_data_root.pt",
                                     "ok.xyz", "nan.xyz", "empty.xyz", "huge.xyz", "cols2.npy", "garbage.ply",
                                     "bad_count.pcd", "a_file", "missing.pt", "missing.xyz")}
    PointCloudDiffusion(**TINY).save(f["ok.pt"])
    payload = torch.load(f["ok.pt"], weights_only=True)
    f["corrupt.pt"].write_bytes(f["ok.pt"].read_bytes()[:700])
    synthetic = {"_target_": "shapediff.data.SyntheticShapes", "num_shapes": 4, "num_points": 64, "pool_size": 256}
    torch.save({**payload, "class": "shapediff.models.LatentVoxelDiffusion", "run_config": {"data": synthetic}},
               f["wrong_family.pt"])
    torch.save({**payload, "run_config": {"data": {"_target_": "shapediff.data.ShapeNetPC15k", "root": str(d / "nowhere")}}},
               f["no_data_root.pt"])
    f["pickle.pt"].write_bytes(pickle.dumps({"format": "shapediff", "x": _Evil()}))
    f["ok.xyz"].write_text("0 0 0\n1 0 0\n0 1 0\n0 0 1\n")
    f["nan.xyz"].write_text("nan nan nan\nnan 0 0\n")
    f["empty.xyz"].write_bytes(b"")
    f["huge.xyz"].write_text("1e30 0 0\n0 1e30 0\n0 0 1e30\n")
    np.save(f["cols2.npy"], np.zeros((8, 2), dtype=np.float32))
    f["garbage.ply"].write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 99\n\x00\xff garbage")
    f["bad_count.pcd"].write_bytes(b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 2147483647 1 1\nWIDTH 2\n"
                                   b"HEIGHT 1\nPOINTS 2\nDATA ascii\n0 0 0\n1 1 1\n")
    f["a_file"].write_text("not a folder")
    return f


def _drive(script: str, cases: list[list[str]]) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(ROOT / "scripts" / script), json.dumps(cases)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PAYLOAD_RAN" not in proc.stdout
    return json.loads(proc.stdout.splitlines()[-1])


def _check(result: dict, expected: str, case, script: str) -> None:
    assert not result["traceback"], (case, result["traceback"][-2000:])
    assert "Traceback" not in result["stderr"], (case, result["stderr"][-2000:])
    assert result["code"] == USER_ERROR, (case, result)  # every case is a user error: exit 2 (shapediff.cli)
    # run_main's "error: ...", view.py's "view.py: ...", argparse's "<script>: error: ..."
    errors = [line for line in result["stderr"].splitlines() if line.startswith(("error:", f"{script}:"))]
    assert len(errors) == 1 and expected in errors[0], (case, result["stderr"][-2000:])


# script -> [(argv with {file} placeholders, substring of the one error line)]
CASES = {
    "sample.py": [
        (["{missing.pt}"], "no such file '{missing.pt}'"),
        (["{corrupt.pt}"], "checkpoint '{corrupt.pt}': not a readable PyTorch file"),
        (["{wrong_family.pt}"], "checkpoint '{wrong_family.pt}': its config does not build a shapediff.models.LatentVoxelDiffusion"),
        (["{pickle.pt}"], "checkpoint '{pickle.pt}': refused to load"),
        (["{ok.pt}", "--n", "0"], "n: expected a positive int"),
        (["{ok.pt}", "--n", "1", "--steps", "2", "--no-preview", "--out", "{a_file}"], "File exists: '{a_file}'"),
        (["{ok.pt}", "--n", "two"], "argument --n: invalid int value: 'two'"),  # argparse: exit 2 as well
    ],
    "evaluate.py": [
        (["{missing.pt}"], "no such file '{missing.pt}'"),
        (["{corrupt.pt}"], "not a readable PyTorch file"),
        (["{pickle.pt}"], "refused to load"),
        (["{ok.pt}"], "checkpoint '{ok.pt}': holds no run config with a 'data' node"),
        (["{wrong_family.pt}", "--n", "2"], "does not build a shapediff.models.LatentVoxelDiffusion"),
        (["{no_data_root.pt}"], "root: no such folder"),
    ],
    "complete.py": [
        (["{missing.pt}", "{ok.xyz}"], "no such file '{missing.pt}'"),
        (["{corrupt.pt}", "{ok.xyz}"], "not a readable PyTorch file"),
        (["{wrong_family.pt}", "{ok.xyz}"], "does not build a shapediff.models.LatentVoxelDiffusion"),
        (["{pickle.pt}", "{ok.xyz}"], "refused to load"),
        (["{ok.pt}", "{missing.xyz}"], "no such file '{missing.xyz}'"),
        (["{ok.pt}", "{nan.xyz}"], "'{nan.xyz}' holds no points"),
        (["{ok.pt}", "{empty.xyz}"], "'{empty.xyz}' is empty (0 bytes)"),
        (["{ok.pt}", "{cols2.npy}"], "'{cols2.npy}': ValueError: expected an (N, 3) array"),
        (["{ok.pt}", "{garbage.ply}"], "could not read points from '{garbage.ply}'"),
        (["{ok.pt}", "{bad_count.pcd}"], "'{bad_count.pcd}': ValueError: PCD header COUNT"),
        (["{ok.pt}", "{huge.xyz}", "--steps", "2"], "expected |coordinates| <= 1e+15"),
        (["{ok.pt}", "{ok.xyz}", "--n", "1", "--steps", "2", "--no-preview", "--no-mesh", "--out", "{a_file}"],
         "File exists: '{a_file}'"),  # checked before the model loads (shapediff.preflight)
    ],
    "evaluate_completion.py": [
        (["{missing.pt}"], "no such file '{missing.pt}'"),
        (["{corrupt.pt}"], "not a readable PyTorch file"),
        (["{pickle.pt}"], "refused to load"),
        (["{ok.pt}"], "{ok.pt}"),  # a model checkpoint without the run config that names its data
        (["{ok.pt}", "--data-from", "{missing.pt}"], "no such file '{missing.pt}'"),
    ],
    "view.py": [
        (["{missing.xyz}", "--out", "{out.png}"], "no such file or folder '{missing.xyz}'"),
        (["{empty.xyz}", "--out", "{out.png}"], "'{empty.xyz}' is empty (0 bytes)"),
        (["{nan.xyz}", "--out", "{out.png}"], "'{nan.xyz}' holds no points"),
        (["{cols2.npy}", "--out", "{out.png}"], "got shape (8, 2)"),
        (["{bad_count.pcd}", "--out", "{out.png}"], "PCD header COUNT"),
        (["{ok.xyz}", "--out", "{out.txt}"], "path: expected a file ending with one of .png"),
        (["{ok.xyz}", "--out", "{out.png}", "--size", "0"], "height: expected an int in [16, 8192]"),
        (["{ok.xyz}", "--out", "{a_file}/x.png"], "File exists: '{a_file}'"),
    ],
    "prepare_shapenet.py": [
        (["{missing.xyz}", "{out_dir}"], "{missing.xyz}"),
        (["{a_file}", "{out_dir}", "--num-points", "0"], "num_points: expected a positive int, got 0"),
    ],
    "fuzz_readers.py": [
        (["--seconds", "0"], "--seconds: expected a positive number, got 0.0"),
        (["--timeout", "nan"], "--timeout: expected a positive number, got nan"),
    ],
}


def _fill(text: str, files: dict[str, Path]) -> str:
    out_dir = files["ok.pt"].parent / "out"
    names = {**{k: str(v) for k, v in files.items()}, "out.png": str(out_dir / "v.png"), "out.txt": str(out_dir / "v.txt"),
             "out_dir": str(out_dir / "prepared")}
    for key, value in names.items():
        text = text.replace("{" + key + "}", value)
    return text


@pytest.mark.parametrize("script", sorted(CASES))
def test_script_bad_inputs_end_in_one_error_line(files, script):
    cases = CASES[script]
    argvs = [[_fill(a, files) for a in argv] for argv, _ in cases]
    for (argv, expected), result in zip(cases, _drive(script, argvs)):
        _check(result, _fill(expected, files), argv, script)


TRAIN = ["experiment=quickstart", "trainer.max_steps=1", "trainer.progress=false", "model.width=16", "model.depth=1"]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["+trainer.nonsense=1"], "error: trainer: unknown key(s) ['nonsense']"),
        (["+model.nonsense=1"], "error: model.denoiser: unknown key(s) ['nonsense']"),
        (["trainer.nonsense=1"], "Could not override 'trainer.nonsense'"),  # Hydra's own message
        (["data=shapenet_pc15k", "data.root=/nonexistent/PC15k"], "error: data.root: no such folder '/nonexistent/PC15k'"),
        (["data=shapenet_pc15k"], "error: data.root is required (the config leaves it at '???'); set it in the config "
                                  "or on the command line, e.g. python scripts/train.py ... data.root=/path/to/..."),
        (["data=nonexistent_group"], "Could not find 'data/nonexistent_group'"),  # Hydra's own message
    ],
    ids=["unknown_trainer_key", "unknown_model_key", "key_without_plus", "missing_data_root", "data_root_unset",
         "unknown_config_group"],
)
def test_train_script_config_errors(tmp_path, overrides, expected):
    """Config errors, ours and Hydra's own (which Hydra ends with exit 1 before main runs), exit 2."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *TRAIN, *overrides, f"run_dir={tmp_path / 'r'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == USER_ERROR and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr[-3000:])
    assert expected in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "r" / "checkpoints").exists() or not list((tmp_path / "r" / "checkpoints").iterdir())


# train.py with run_training replaced, to reach its other exits without a long run.
_TRAIN_SHIM = (
    "import runpy, sys\nimport shapediff.training.experiment as e\nfrom omegaconf import OmegaConf\n"
    "from shapediff.training.trainer import TrainingDiverged\n"
    "def diverged(cfg):\n    raise TrainingDiverged('training diverged at step 3: loss is nan')\n"
    "def missing(cfg):\n    return OmegaConf.create({'pipeline': {'vae_checkpoint': '???'}}).pipeline.vae_checkpoint\n"
    "e.run_training = {'diverged': diverged, 'missing': missing}[sys.argv[1]]\n"
    "sys.argv = sys.argv[2:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n"
)


@pytest.mark.parametrize(
    "fault, code, expected",
    [
        ("diverged", RUNTIME_FAILURE, "error: training diverged at step 3: loss is nan"),
        ("missing", USER_ERROR, "error: pipeline.vae_checkpoint is required (the config leaves it at '???'); set it "
                                "in the config or on the command line, e.g. python scripts/train.py ... "
                                "pipeline.vae_checkpoint=/path/to/..."),
    ],
)
def test_train_script_exit_statuses(tmp_path, fault, code, expected):
    """A diverged run is a runtime failure (exit 1); a '???' value met while training (an omegaconf
    MissingMandatoryValue past the up-front check) is a user error (exit 2) naming the key, in one line."""
    proc = subprocess.run([sys.executable, "-c", _TRAIN_SHIM, fault, str(ROOT / "scripts" / "train.py"), *TRAIN,
                           f"run_dir={tmp_path / 'r'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == code and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr[-3000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [expected], proc.stderr[-3000:]
