"""The known dialects by name, and the payload and endpoint of a request in one of them."""

from __future__ import annotations

from typing import Any

from tasks.dialects.base import Dialect, VideoRef, _text
from tasks.dialects.gdc import gdc_part
from tasks.dialects.openai import openai_part
from tasks.dialects.trinity import trinity_part

DIALECTS = {
    "openai": Dialect("openai", "model", openai_part, video_first=False),
    "gdc": Dialect("gdc", "model_id", gdc_part, video_first=True),
    "trinity": Dialect("trinity", "model", trinity_part, video_first=False),
}


def build_payload(dialect: str, model: str, system: str, user: str, videos: list[VideoRef],
                  params: dict[str, Any] | None = None, extra_body: dict[str, Any] | None = None) -> dict:
    """The JSON body of one chat/completions request."""
    d = DIALECTS[dialect]
    parts = [d.video_part(v) for v in videos]
    content = parts + [_text(user)] if d.video_first else [_text(user)] + parts
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    body = {d.model_field: model, "messages": messages}
    body.update(params or {})
    body.update(extra_body or {})
    return body


def endpoint(dialect: str, base_url: str, project: str | None = None, location: str | None = None) -> str:
    """The chat/completions URL: base_url + /chat/completions, or GDC's project/location path."""
    base = base_url.rstrip("/")
    if dialect == "gdc":
        return f"{base}/v1/projects/{project}/locations/{location}/chat/completions"
    return f"{base}/chat/completions"
