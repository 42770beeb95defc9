from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_harness import OtlpReceiver, Shop, start_shop

TOKEN = "test-admin-token"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    rec = OtlpReceiver()
    try:
        yield rec
    finally:
        rec.close()


@pytest.fixture(scope="module")
def shop(receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """The full 12-service shop, no load, token-protected, one per test module."""
    tmp: Path = tmp_path_factory.mktemp("shop")
    running = start_shop(tmp, receiver.url, token=TOKEN)
    try:
        yield running
    finally:
        running.stop()
