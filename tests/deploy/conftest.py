"""Fixtures for the deploy tests: child processes always stopped (and waited for)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from deploy_procs import Proc


@pytest.fixture
def processes() -> Iterator[list[Proc]]:
    procs: list[Proc] = []
    yield procs
    for p in reversed(procs):
        p.stop()
