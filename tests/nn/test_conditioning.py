"""Guidance dropout drawn per example from the trainer's seeds: the same draws however a batch is split."""

from __future__ import annotations

import pytest
import torch

from shapediff.nn.conditioning import drop_labels, guidance_keep

SEEDS = torch.arange(1000, 1064, dtype=torch.int64) * 7919


def test_each_examples_draw_is_its_own_whatever_the_batch():
    whole = guidance_keep(64, 0.3, True, torch.device("cpu"), SEEDS)
    halves = torch.cat([guidance_keep(32, 0.3, True, torch.device("cpu"), s) for s in SEEDS.split(32)])
    reordered = guidance_keep(64, 0.3, True, torch.device("cpu"), SEEDS.flip(0)).flip(0)
    assert torch.equal(whole, halves) and torch.equal(whole, reordered)


def test_the_drop_rate_is_the_probability():
    seeds = torch.arange(20000, dtype=torch.int64)
    dropped = 1.0 - guidance_keep(len(seeds), 0.1, True, torch.device("cpu"), seeds).float().mean()
    assert abs(float(dropped) - 0.1) < 0.01  # 4.7 standard errors


def test_dropped_labels_become_the_null_class_and_nothing_drops_in_eval():
    labels = torch.arange(64) % 12
    out = drop_labels(labels, 12, 0.5, True, SEEDS)
    keep = guidance_keep(64, 0.5, True, torch.device("cpu"), SEEDS)
    assert torch.equal(out, torch.where(keep, labels, torch.full_like(labels, 12))) and 0 < int((~keep).sum()) < 64
    assert torch.equal(drop_labels(labels, 12, 0.5, False, SEEDS), labels)
    assert guidance_keep(64, 0.0, True, torch.device("cpu"), SEEDS) is None


def test_seeds_of_another_length_are_refused():
    with pytest.raises(ValueError, match=r"seeds: expected \(8,\) per-example seeds, got \(4,\)"):
        guidance_keep(8, 0.1, True, torch.device("cpu"), SEEDS[:4])
