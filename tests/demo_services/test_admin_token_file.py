"""`make demo` leaves its fresh admin token in data/admin-token; the fault commands find it."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo_services.control_client import ControlClient
from demo_services.defaults import TOKEN_ENV


def test_token_from_env_wins_over_the_demo_token_file(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "admin-token").write_text("from-file\n")
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert ControlClient().token == "from-file"
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert ControlClient().token == "from-env"


def test_no_env_and_no_file_means_no_token(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert ControlClient().token is None
