"""Pure payload builders for the provider dialects, and the parser of their chat.completion answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .body import InlineData
from .errors import MalformedResponseError
from .media import GDC_FORMAT


@dataclass(frozen=True)
class VideoRef:
    """A video as the request carries it: an https URL, a storage URI, or inline data (url is then its placeholder)."""

    url: str
    ext: str
    file_name: str
    inline: InlineData | None = None


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


def openai_part(v: VideoRef) -> dict:
    """Lunos/OpenRouter/vLLM video part (seed 000)."""
    return {"type": "video_url", "video_url": {"url": v.url}}


def gdc_part(v: VideoRef) -> dict:
    """GDC part (seeds 001/004): input_video for inline data, video_url for a bucket object."""
    if v.inline is not None or v.url.startswith("data:"):
        return {"type": "input_video", "input_video": {"data": v.url, "format": GDC_FORMAT.get(v.ext, v.ext)}}
    return {"type": "video_url", "video_url": {"url": v.url}}


def trinity_part(v: VideoRef) -> dict:
    """Trinity file part (seed 002)."""
    return {"type": "file", "file_name": v.file_name, "file_url": v.url}


@dataclass(frozen=True)
class Dialect:
    """How one provider family names the model, shapes a video part and orders the parts."""

    name: str
    model_field: str
    video_part: Callable[[VideoRef], dict]
    video_first: bool  # GDC: with a single video, the video goes before the text


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


@dataclass(frozen=True)
class Completion:
    """The parts of a chat.completion answer the ledger keeps."""

    text: str
    finish_reason: str | None
    response_id: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None


def parse_completion(body: Any) -> Completion:
    """Read a chat.completion body; MalformedResponseError when it is not one."""
    try:
        choice = body["choices"][0]
        content = choice["message"]["content"]
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise TypeError("message.content is not text")
        usage = body.get("usage") or {}
        return Completion(text=content, finish_reason=choice.get("finish_reason"), response_id=body.get("id"),
                          prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"),
                          total_tokens=usage.get("total_tokens"))
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise MalformedResponseError(f"the answer is not a chat.completion: {type(e).__name__}: {e}", 200) from None
