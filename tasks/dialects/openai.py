"""The openai dialect (Lunos video input; also OpenRouter and vLLM): video_url parts after the text."""

from __future__ import annotations

from tasks.dialects.base import Dialect, VideoRef
from tasks.dialects.mime import VIDEO_MIME

# Lunos video input: video/mov like Gemini, but .mpg is video/mpeg
MIME_TYPES = {**VIDEO_MIME, "mpg": "video/mpeg"}


# Lunos video input accepts four MIME types and states no duration or size limit
MEDIA_LIMITS = {"mime_types": ["video/mp4", "video/mpeg", "video/mov", "video/webm"]}


def openai_part(v: VideoRef) -> dict:
    """Lunos/OpenRouter/vLLM video part: {"type": "video_url", "video_url": {"url": ...}}."""
    return {"type": "video_url", "video_url": {"url": v.url}}


DIALECT = Dialect("openai", model_field="model", video_part=openai_part, video_first=False,
                  media_limits=MEDIA_LIMITS, mime_types=MIME_TYPES, localapi_prefix="/v1")
