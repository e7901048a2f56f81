"""Fixtures shared by the core tests (support code lives in support.py)."""

from __future__ import annotations

import pytest
from support import Harness


@pytest.fixture
def harness() -> Harness:
    return Harness()
