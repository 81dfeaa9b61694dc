"""Reading a response body under a cap on its *decoded* size: a huge answer or a gzip bomb costs at most the cap.

The HTTP layer hands over the raw (still encoded) chunks; decoding happens here, ``max_length`` at a time, so no
chunk can inflate past the cap in memory. Only the encodings we ask for (``ACCEPT_ENCODING``) are accepted.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Mapping

from resilient_llm.errors import ErrorResponse, FailureKind, MalformedResponse, ProviderError
from resilient_llm.protocol import parse_retry_after

MAX_BODY_BYTES = 8 * 1024 * 1024  # a chat completion is kilobytes; reasoning and logprobs stay well below this
ACCEPT_ENCODING = "gzip, deflate"


class _Inflate:
    """zlib / gzip / raw deflate, never producing more than ``room`` bytes from one call."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding in ("gzip", "x-gzip")
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16 if self._gzip else zlib.MAX_WBITS)
        self._started = False

    def feed(self, data: bytes, out: bytearray, limit: int) -> None:
        if not self._started and not self._gzip:
            self._started = True
            try:  # "deflate" is zlib-wrapped by the RFC, raw in practice from some servers
                self._pump(data, out, limit)
                return
            except zlib.error:
                if out:
                    raise
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
        self._started = True
        self._pump(data, out, limit)

    def _pump(self, data: bytes, out: bytearray, limit: int) -> None:
        while data and not self._zlib.eof:
            out += self._zlib.decompress(data, limit - len(out) + 1)
            if len(out) > limit:
                return
            data = self._zlib.unconsumed_tail


async def read_body(chunks: AsyncIterator[bytes], status: int, headers: Mapping[str, str], limit: int) -> bytes:
    """The decoded body, or the ProviderError saying it is over ``limit`` bytes or not decodable."""
    encoding = headers.get("content-encoding", "identity").strip().lower() or "identity"
    if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
        raise MalformedResponse(
            f"unsupported content-encoding {encoding[:40]!r}", kind=FailureKind.BAD_ENCODING, status=status
        )
    length = headers.get("content-length", "")
    if encoding == "identity" and length.isdigit() and int(length) > limit:
        raise _too_large(status, headers, limit)
    inflate = None if encoding == "identity" else _Inflate(encoding)
    body = bytearray()
    try:
        async for chunk in chunks:
            if inflate is None:
                body += chunk
            else:
                inflate.feed(chunk, body, limit)
            if len(body) > limit:
                raise _too_large(status, headers, limit)
    except zlib.error as exc:
        raise MalformedResponse(
            f"body is not valid {encoding}: {exc}", kind=FailureKind.BAD_ENCODING, status=status
        ) from exc
    return bytes(body)


def _too_large(status: int, headers: Mapping[str, str], limit: int) -> ProviderError:
    message = f"response body over {limit} bytes (decoded); not read further"
    if status >= 400:  # the status still decides retry and backpressure
        return ErrorResponse(
            message, kind=FailureKind.http(status), status=status, retry_after=parse_retry_after(headers)
        )
    return MalformedResponse(message, kind=FailureKind.TOO_LARGE, status=status)
