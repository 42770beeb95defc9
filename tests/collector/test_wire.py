"""Body handling: media types, gzip/deflate, size limits and gzip bombs."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import pytest

from collector.model import DecodeError
from collector.wire import (
    PayloadTooLarge,
    UnsupportedEncoding,
    decompress,
    media_type,
)

MB = 1024 * 1024


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("application/x-protobuf", "application/x-protobuf"),
        ("Application/JSON; charset=utf-8", "application/json"),
        ("  application/json  ;charset=UTF-8", "application/json"),
        (None, ""),
        ("", ""),
    ],
)
def test_media_type_is_bare_and_lower_case(header: str | None, expected: str) -> None:
    assert media_type(header) == expected


@pytest.mark.parametrize("encoding", [None, "", "identity", "IDENTITY"])
def test_identity_body_passes_through(encoding: str | None) -> None:
    assert decompress(b"hello", encoding, 100) == b"hello"


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "GZip"])
def test_gzip_body_is_inflated(encoding: str) -> None:
    payload = b"span " * 1000
    assert decompress(gzip.compress(payload), encoding, MB) == payload


def test_concatenated_gzip_members_inflate_to_one_body() -> None:
    body = gzip.compress(b"first ") + gzip.compress(b"second")
    assert decompress(body, "gzip", MB) == b"first second"


def test_deflate_zlib_and_raw_are_inflated() -> None:
    payload = b"deflated " * 100
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_body = raw.compress(payload) + raw.flush()
    assert decompress(zlib.compress(payload), "deflate", MB) == payload
    assert decompress(raw_body, "deflate", MB) == payload


def test_body_larger_than_limit_is_too_large_before_inflating() -> None:
    with pytest.raises(PayloadTooLarge) as info:
        decompress(b"x" * 101, None, 100)
    message = str(info.value)
    assert "101 bytes" in message and "limit of 100 bytes" in message
    assert "max_body_bytes" in message  # says how to raise it


def test_inflated_size_exactly_at_limit_is_accepted() -> None:
    payload = b"a" * 1000
    assert decompress(gzip.compress(payload), "gzip", 1000) == payload
    with pytest.raises(PayloadTooLarge):
        decompress(gzip.compress(payload), "gzip", 999)


def test_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip.compress(bytes(64 * MB), compresslevel=9)
    assert len(bomb) < MB  # it passes the raw-size check; only inflating reveals it
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge) as info:
            decompress(bomb, "gzip", MB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "gzip body inflating to more than" in str(info.value)
    # 64 MB of zeros would be inflated by a naive gzip.decompress; we stop near the limit.
    assert peak < 4 * MB


def test_truncated_gzip_is_a_decode_error_saying_so() -> None:
    body = gzip.compress(b"some spans " * 500)
    with pytest.raises(DecodeError, match="truncated"):
        decompress(body[: len(body) // 2], "gzip", MB)


def test_empty_gzip_body_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="truncated"):
        decompress(b"", "gzip", MB)


def test_corrupt_gzip_is_a_decode_error_saying_so() -> None:
    with pytest.raises(DecodeError, match="gzip body is corrupt"):
        decompress(b"this is not gzip at all", "gzip", MB)


def test_trailing_garbage_after_gzip_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="unexpected bytes"):
        decompress(gzip.compress(b"ok") + b"junk", "gzip", MB)


def test_unknown_encoding_is_unsupported_and_lists_the_supported_ones() -> None:
    with pytest.raises(UnsupportedEncoding, match="'br'.*gzip"):
        decompress(b"...", "br", MB)
