"""shapediff.threads: trainer.num_threads and the OpenMP wait policy the scripts set."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from shapediff import threads
from shapediff.training.trainer import TrainerConfig
from tests.install.conftest import ROOT


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_explicit_and_torch_settings(restore_threads, monkeypatch):
    assert threads.configure_threads(1) == 1 == torch.get_num_threads()
    assert threads.configure_threads("2") == 2 == torch.get_num_threads()
    assert threads.configure_threads("torch") == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.configure_threads("auto") == 2  # the user's OMP_NUM_THREADS: auto leaves torch alone


def test_auto_is_capped_by_the_usable_cpus(restore_threads, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_torch_default", 8)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 3)
    assert threads.configure_threads("auto") == 3 == torch.get_num_threads()
    monkeypatch.setattr(threads, "usable_cpus", lambda: 16)
    assert threads.auto_threads() == 8


@pytest.mark.parametrize("bad", [0, -1, "x", 1.5, True])
def test_bad_settings_name_the_key(bad):
    with pytest.raises(ValueError, match="trainer.num_threads: expected 'auto', 'torch' or a positive int"):
        TrainerConfig.from_dict({"num_threads": bad})


def test_scripts_set_the_passive_wait_before_torch_loads():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import shapediff.cli, os, sys; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["PASSIVE", "False"], out.stderr
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's choice wins
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[0] == "ACTIVE"
