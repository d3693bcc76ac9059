"""Request bodies whose base64 videos are streamed from storage in chunks, never built as whole strings."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tasks.dialects.base import InlineData
from tasks.errors import SourceError

CHUNK = 3 * 256 * 1024  # a multiple of 3: base64 of each chunk needs no padding but the last


def placeholder() -> str:
    """A token that stands in the JSON for an inline video until the body is streamed."""
    return f"@@vidbatch-inline-{uuid.uuid4().hex}@@"


class RequestBody:
    """The JSON of a payload whose placeholders are replaced, while streaming, by base64 data URLs."""

    def __init__(self, payload: dict, inline: dict[str, InlineData] | None = None):
        rest = json.dumps(payload, separators=(",", ":")).encode()  # the text after the last video placed
        self.pieces: list[bytes | InlineData] = []
        for token, data in (inline or {}).items():
            before, found, rest = rest.partition(token.encode())
            if not found:
                raise ValueError(f"placeholder for {data.name} is not in the payload")
            self.pieces += [before, data]
        self.pieces.append(rest)

    def __len__(self) -> int:
        return sum(len(p) if isinstance(p, bytes) else p.encoded_size() for p in self.pieces)

    @property
    def inline_bytes(self) -> int:
        return sum(p.size for p in self.pieces if isinstance(p, InlineData))

    async def stream(self) -> AsyncIterator[bytes]:
        """The body in chunks: JSON text, then each video read and base64-encoded a chunk at a time."""
        for piece in self.pieces:
            if isinstance(piece, bytes):
                yield piece
                continue
            yield piece.header()
            f = await asyncio.to_thread(piece.open)
            try:
                read = 0
                while chunk := await asyncio.to_thread(f.read, CHUNK):
                    read += len(chunk)
                    yield base64.b64encode(chunk)
            finally:
                f.close()
            if read != piece.size:  # the body's length was declared: a changed object cannot be sent
                raise SourceError(f"{piece.name}: changed while being sent (expected {piece.size:,} bytes, "
                                  f"read {read:,})")

    def to_bytes(self) -> bytes:
        """The whole body at once (small payloads and tests)."""
        out = []
        for piece in self.pieces:
            if isinstance(piece, bytes):
                out.append(piece)
            else:
                with piece.open() as f:
                    out.append(piece.header() + base64.b64encode(f.read()))
        return b"".join(out)


class ByteBudget:
    """Bounds the video bytes all in-flight requests hold together; one request larger than it still goes alone."""

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0
        self._cond = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, n: int):
        async with self._cond:
            await self._cond.wait_for(lambda: self.held == 0 or self.held + n <= self.limit)
            self.held += n
        try:
            yield
        finally:
            async with self._cond:
                self.held -= n
                self._cond.notify_all()
