"""benchmarks/bench_lvd_arms.py cost: every arm times a step, and ``--amp`` adds each arm under CPU bf16 autocast
with its ratio to float32 (the figure behind ``trainer.amp=bf16`` in docs/lvd_quickstart_quality.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from shapediff.devices import cpu_bf16_supported

ROOT = Path(__file__).resolve().parents[2]


def _bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_lvd_arms", ROOT / "benchmarks" / "bench_lvd_arms.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "VAE_ARMS", {"VAE second round": dict(sign_weight=1.0)})  # one arm of each kind: fast
    monkeypatch.setattr(bench, "UNET_ARMS", {"UNet preset": ({}, 2)})
    monkeypatch.setattr(bench, "CHANNELS_LAST_ARMS", ("UNet preset",))
    return bench


def _rows(text):
    return {line.split("|")[1].strip(): [float(c) for c in line.split("|")[2:-1]] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| arm") and not line.startswith("| ---")}


def _ratio_of_printed(ratio, seconds, ref):
    """Whether a printed ratio is seconds / ref within the 3-decimal rounding of all three printed values (a toy
    step of ~40 ms rounds by more than 1 %)."""
    half = 0.0005
    return (seconds - half) / (ref + half) - half <= ratio <= (seconds + half) / (ref - half) + half


def test_cost_times_every_arm(monkeypatch, capsys):
    _bench(monkeypatch).cost(reps=1)
    rows = _rows(capsys.readouterr().out)
    assert set(rows) == {"VAE second round", "UNet preset", "UNet preset, channels_last"}
    assert all(r[0] > 0 for r in rows.values())
    assert rows["VAE second round"][1] == rows["UNet preset"][1] == 1.0  # each kind's ratios are to its first arm
    (seconds, ratio), ref = rows["UNet preset, channels_last"], rows["UNet preset"][0]
    assert _ratio_of_printed(ratio, seconds, ref)


@pytest.mark.skipif(not cpu_bf16_supported(), reason="this CPU has no bf16 instructions (AVX512-BF16 / AMX)")
def test_cost_with_amp_adds_each_arm_in_bf16_with_its_ratio_to_float32(monkeypatch, capsys):
    _bench(monkeypatch).cost(reps=1, amp=True)
    rows = _rows(capsys.readouterr().out)
    assert set(rows) == {"VAE second round", "UNet preset", "UNet preset, channels_last", "VAE second round, bf16",
                         "UNet preset, bf16", "UNet preset, channels_last, bf16"}
    for name in ("VAE second round", "UNet preset"):
        seconds, bf16_seconds, ratio = rows[name][0], rows[f"{name}, bf16"][0], rows[f"{name}, bf16"][2]
        assert _ratio_of_printed(ratio, bf16_seconds, seconds)
        assert rows[name][2] == 1.0


def test_cost_with_amp_on_a_cpu_without_bf16_says_why(monkeypatch):
    import shapediff.devices

    monkeypatch.setattr(shapediff.devices, "cpu_bf16_supported", lambda: False)
    with pytest.raises(SystemExit, match="no bf16 instructions"):
        _bench(monkeypatch).cost(reps=1, amp=True)
