"""The Dialect record and the video references every dialect's payload is built from."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO


@dataclass(frozen=True)
class VideoRef:
    """A video as the request carries it: an https URL, a storage URI, or inline data (url is then its placeholder)."""

    url: str
    ext: str
    file_name: str
    inline: InlineData | None = None


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


@dataclass(frozen=True)
class Dialect:
    """How one provider family names the model, shapes a video part and orders the parts."""

    name: str
    model_field: str
    video_part: Callable[[VideoRef], dict]
    video_first: bool  # GDC: with a single video, the video goes before the text


@dataclass(frozen=True)
class InlineData:
    """A video to inline: how to open a fresh stream of it, its size, MIME type and name (for messages)."""

    open: Callable[[], BinaryIO]
    size: int
    mime: str
    name: str

    def header(self) -> bytes:
        return f"data:{self.mime};base64,".encode()

    def encoded_size(self) -> int:
        return len(self.header()) + 4 * math.ceil(self.size / 3)
