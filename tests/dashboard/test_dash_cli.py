from __future__ import annotations

import pytest

from dashboard.__main__ import parse_args


def test_defaults() -> None:
    a = parse_args([])
    assert (a.collector, a.host, a.port, a.demo_admin, a.refresh_ms) == (
        "http://127.0.0.1:4318", "127.0.0.1", 8050, None, 1500)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--collector", "ftp://x"], "is not an http(s) URL"),
        (["--demo-admin", "127.0.0.1:8100"], "is not an http(s) URL"),
        (["--refresh-ms", "10"], "at least 250 ms"),
        (["--window-s", "0"], "between 1 and 3600"),
    ],
)
def test_bad_arguments_say_what_is_wrong(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
