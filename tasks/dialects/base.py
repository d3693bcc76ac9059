"""The Dialect record and the video references every dialect's payload is built from."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

CHAT_COMPLETIONS = "/chat/completions"


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
    """Everything about one provider family: its payload, media limits, MIME names, endpoint and required keys."""

    name: str
    model_field: str  # the body key that names the model
    video_part: Callable[[VideoRef], dict]
    video_first: bool  # with a single video, the video goes before the text
    media_limits: Mapping[str, Any]  # the defaults of ProviderConfig.media (MediaLimits keys)
    mime_types: Mapping[str, str]  # file extension -> MIME type as this dialect names it
    localapi_prefix: str | None  # where the offline localapi serves this dialect; None: it does not
    formats: Mapping[str, str] = field(default_factory=dict)  # file extension -> the dialect's format name
    path: str = CHAT_COMPLETIONS  # after base_url; may name {project} and {location}
    required: tuple[str, ...] = ()  # provider keys this dialect cannot do without
    required_why: str = ""  # why, for the error naming the missing ones

    def payload(self, model: str, system: str, user: str, videos: list[VideoRef],
                params: dict[str, Any] | None = None, extra_body: dict[str, Any] | None = None) -> dict:
        """The JSON body of one chat/completions request."""
        parts = [self.video_part(v) for v in videos]
        content = parts + [_text(user)] if self.video_first else [_text(user)] + parts
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
        body = {self.model_field: model, "messages": messages}
        body.update(params or {})
        body.update(extra_body or {})
        return body

    def endpoint(self, base_url: str, project: str | None = None, location: str | None = None) -> str:
        """The chat/completions URL: base_url followed by this dialect's path."""
        return base_url.rstrip("/") + self.path.format(project=project, location=location)

    def mime(self, ext: str) -> str:
        """The MIME type this dialect expects for a file extension (video/<ext> for one it does not list)."""
        ext = ext.lower()
        return self.mime_types.get(ext, f"video/{ext or 'mp4'}")

    def missing(self, values: Mapping[str, Any]) -> list[str]:
        """The required keys that `values` (a provider's settings) leaves unset or empty."""
        return [k for k in self.required if not values.get(k)]

    def require(self, values: Mapping[str, Any]) -> None:
        """Raise ValueError naming the required keys that `values` lacks."""
        if missing := self.missing(values):
            why = f" ({self.required_why})" if self.required_why else ""
            raise ValueError(f"the {self.name} dialect needs {' and '.join(self.required)}{why}; "
                             f"missing: {', '.join(missing)}")


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
