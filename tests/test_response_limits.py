"""Response bodies are read under a size cap on their decoded bytes, against a purpose-built server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator

import pytest

from resilient_llm.endpoints.body import MAX_BODY_BYTES
from resilient_llm.endpoints.http import HTTPHandler
from resilient_llm.errors import ErrorResponse, MalformedResponse, ProviderError
from resilient_llm.types import ChatRequest, ChatResult, Outcome
from tests.conftest import MODEL, fast_config

ANSWER = json.dumps(
    {"id": "gen-1", "model": MODEL, "choices": [{"message": {"role": "assistant", "content": "fine"}}]}
).encode()
MB = 1024 * 1024


def _gzip(data: bytes, *, repeat: int = 1, wbits: int = zlib.MAX_WBITS | 16) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return b"".join(packer.compress(data) for _ in range(repeat)) + packer.flush()


class BodyServer:
    """Answers every request with the next canned (status, headers, body, chunked) reply; counts bytes it sent."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, dict[str, str], bytes, bool]] = []
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/api/v1"
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lengths = [int(line[15:]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
            await reader.readexactly(sum(lengths))
            status, headers, body, chunked = self.replies.pop(0)
            lines = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in headers.items())]
            lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            step = 64 * 1024
            for start in range(0, len(body), step):
                piece = body[start : start + step]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                await writer.drain()
            if chunked:
                writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture
def body_server() -> Iterator[BodyServer]:
    server = BodyServer()
    yield server
    server.close()


def _call(server: BodyServer, **handler_options: int) -> tuple[ChatResult | ProviderError, float, int]:
    """One attempt through the real HTTP layer; the result or error, seconds taken, peak traced memory."""

    async def attempt() -> ChatResult | ProviderError:
        http = HTTPHandler(fast_config(server.url, timeout=20.0).http, 20, **handler_options)
        try:
            return await http.handle(ChatRequest(model=MODEL, messages=({"role": "user", "content": "q"},)))
        except ProviderError as exc:
            return exc
        finally:
            await http.aclose()

    tracemalloc.start()
    started = time.monotonic()
    try:
        outcome = asyncio.run(attempt())
        return outcome, time.monotonic() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_huge_body_is_cut_at_the_cap(body_server: BodyServer) -> None:
    """A 50 MB 200 answer (announced by Content-Length) is refused as too_large without being read."""
    body_server.replies.append((200, {"Content-Type": "application/json"}, b" " * (50 * MB), False))
    error, _, peak = _call(body_server)
    assert isinstance(error, MalformedResponse)
    assert error.kind == "too_large"
    assert peak < 20 * MB


def test_a_huge_chunked_body_stops_at_the_cap(body_server: BodyServer) -> None:
    """Without Content-Length the body is read only until it passes the cap."""
    body_server.replies.append((200, {"Content-Type": "application/json"}, b" " * (30 * MB), True))
    error, _, peak = _call(body_server, max_body_bytes=1 * MB)
    assert isinstance(error, MalformedResponse)
    assert error.kind == "too_large"
    assert peak < 10 * MB


@pytest.mark.slow
def test_a_gzip_bomb_is_cut_at_the_cap_on_decoded_bytes(body_server: BodyServer) -> None:
    """200 MB of zeros gzipped to a few hundred KB: decoding stops at the cap instead of inflating it all."""
    bomb = _gzip(b"\0" * MB, repeat=200)
    assert len(bomb) < MAX_BODY_BYTES
    body_server.replies.append((200, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, bomb, False))
    error, seconds, peak = _call(body_server)
    assert isinstance(error, MalformedResponse)
    assert error.kind == "too_large"
    assert peak < 3 * MAX_BODY_BYTES
    assert seconds < 10.0


def test_an_oversized_error_body_keeps_its_status_and_retry_after(body_server: BodyServer) -> None:
    """A 429 with a huge body is still a 429 (backpressure, Retry-After read from the headers)."""
    body_server.replies.append((429, {"Retry-After": "3"}, b"x" * (2 * MB), True))
    error, _, _ = _call(body_server, max_body_bytes=MB)
    assert isinstance(error, ErrorResponse)
    assert (error.status, error.retry_after) == (429, 3.0)


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", _gzip(ANSWER)),
        ("deflate", _gzip(ANSWER, wbits=zlib.MAX_WBITS)),
        ("deflate", _gzip(ANSWER, wbits=-zlib.MAX_WBITS)),
        ("identity", ANSWER),
    ],
)
def test_compressed_answers_below_the_cap_are_read(body_server: BodyServer, encoding: str, body: bytes) -> None:
    """gzip, zlib and raw deflate answers decode to the same result as a plain one."""
    body_server.replies.append((200, {"Content-Encoding": encoding}, body, False))
    result, _, _ = _call(body_server)
    assert isinstance(result, ChatResult)
    assert (result.outcome, result.text) == (Outcome.OK, "fine")


@pytest.mark.parametrize(
    ("encoding", "body"), [("br", ANSWER), ("gzip", b"not gzip at all"), ("gzip", _gzip(ANSWER)[:-30])]
)
def test_undecodable_bodies_are_malformed_responses(body_server: BodyServer, encoding: str, body: bytes) -> None:
    """An encoding we did not ask for, or a corrupt gzip stream, is a typed (retryable) MalformedResponse."""
    body_server.replies.append((200, {"Content-Encoding": encoding}, body, False))
    error, _, _ = _call(body_server)
    assert isinstance(error, MalformedResponse)
    assert error.kind in {"bad_encoding", "bad_json"}
