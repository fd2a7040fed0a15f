"""Fixtures for the diffusion-core tests: every test runs with one torch thread (tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield
