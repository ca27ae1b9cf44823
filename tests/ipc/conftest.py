"""Fixtures shared by the ipc tests."""

import pytest

from nonsense_hpc import ipc


@pytest.fixture
def server():
    """A real ipc server on a free loopback port, closed after the test."""
    srv = ipc.server("127.0.0.1", 0)
    yield srv
    srv.close()
