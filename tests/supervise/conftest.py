"""Fixtures of the supervision tests."""

from __future__ import annotations

import pytest
from supervise_helpers import Events


@pytest.fixture
def events() -> Events:
    return Events()
