"""Request-body handling shared by the OTLP and Zipkin receivers: media type and decompression.

Decompression is incremental and bounded: a body, or what it inflates to, larger than the
configured limit raises `PayloadTooLarge` (answer 413) after allocating at most about the limit,
so a gzip bomb costs no more memory than an honest body of the largest allowed size.
"""

from __future__ import annotations

import zlib

from collector.model import DecodeError

GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip header and trailer, as Content-Encoding: gzip sends
_ZLIB_WBITS = zlib.MAX_WBITS  # Content-Encoding: deflate is the zlib format (RFC 9110 8.4.1.2)
_RAW_DEFLATE_WBITS = -zlib.MAX_WBITS  # some clients send raw deflate for "deflate"
SUPPORTED_ENCODINGS = ("identity", "gzip", "x-gzip", "deflate")


class PayloadTooLarge(Exception):
    """The body, before or after decompression, exceeds the size limit (answer 413)."""

    def __init__(self, what: str, limit: int | None = None) -> None:
        self.limit = limit
        if limit is None:  # a caller that wrote the whole message itself
            super().__init__(what)
            return
        super().__init__(
            f"{what} exceeds the collector's limit of {limit} bytes; send smaller batches "
            f"(lower the exporter's max batch size) or raise the limit "
            f"(CollectorConfig.max_body_bytes)"
        )


class UnsupportedMediaType(Exception):
    """The Content-Type is not one this endpoint decodes (answer 415)."""


class UnsupportedEncoding(Exception):
    """The Content-Encoding is not one this collector inflates (answer 415)."""


def media_type(content_type: str | None) -> str:
    """The bare, lower-cased media type of a Content-Type header (``""`` when absent)."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def decompress(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """Inflate ``body`` per its Content-Encoding, never producing more than ``max_bytes``.

    Identity, gzip (also ``x-gzip``, and concatenated gzip members) and deflate are accepted.
    Raises `PayloadTooLarge` when the body or its inflated size exceeds ``max_bytes``,
    `UnsupportedEncoding` for any other encoding, and `DecodeError` for a corrupt or
    truncated compressed body.
    """
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"request body of {len(body)} bytes", max_bytes)
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return _inflate(body, _GZIP_WBITS, "gzip", max_bytes)
    if encoding == "deflate":
        has_zlib_header = (
            len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0
        )
        wbits = _ZLIB_WBITS if has_zlib_header else _RAW_DEFLATE_WBITS
        return _inflate(body, wbits, "deflate", max_bytes)
    raise UnsupportedEncoding(
        f"Content-Encoding {content_encoding!r} is not supported; send the body uncompressed "
        f"or with one of: {', '.join(SUPPORTED_ENCODINGS)}"
    )


def _inflate(body: bytes, wbits: int, label: str, max_bytes: int) -> bytes:
    out = bytearray()
    inflater = zlib.decompressobj(wbits)
    data = body
    while True:
        # Ask for one byte more than the room left: getting it proves the limit is exceeded
        # without ever holding more than max_bytes + 1 inflated bytes.
        try:
            piece = inflater.decompress(data, max_bytes - len(out) + 1)
        except zlib.error as exc:
            raise DecodeError(
                f"{label} body is corrupt ({exc}); check the client's Content-Encoding header "
                f"matches how the body was compressed"
            ) from exc
        out += piece
        if len(out) > max_bytes:
            raise PayloadTooLarge(f"{label} body inflating to more than {max_bytes} bytes",
                                  max_bytes)
        if inflater.eof:
            rest = inflater.unused_data
            if not rest:
                return bytes(out)
            if wbits == _GZIP_WBITS and rest[:2] == GZIP_MAGIC:
                # RFC 1952 allows several members back to back; they decode to one stream.
                inflater = zlib.decompressobj(wbits)
                data = rest
                continue
            raise DecodeError(
                f"{label} body has {len(rest)} unexpected bytes after the end of the "
                f"compressed stream"
            )
        data = inflater.unconsumed_tail
        if not data and not piece:
            raise DecodeError(
                f"{label} body is truncated: the compressed stream ends before its end marker "
                f"({len(body)} bytes received); resend the complete body"
            )
