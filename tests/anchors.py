"""Reading the anchors' recorded outputs (``../shared/data/anchor_fixtures``) in fixture tests."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import SHARED_DATA

FIXTURES = SHARED_DATA / "anchor_fixtures"


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 distance |a - b| / |b|, in float64."""
    return float((a.double() - b.double()).norm() / b.double().norm())


def load_fixture(name: str, recorded_from: str) -> dict:
    """The fixture ``<name>.pt`` (loaded with weights_only), or a skip naming it when it is absent."""
    path = FIXTURES / f"{name}.pt"
    if not path.is_file():
        pytest.skip(f"anchor fixture {path} not found (recorded from {recorded_from}; see ../shared/data/anchor_fixtures)")
    return torch.load(path, weights_only=True)
