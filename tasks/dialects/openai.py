"""The openai dialect (Lunos video input; also OpenRouter, vLLM)."""

from __future__ import annotations

from tasks.dialects.base import VideoRef


def openai_part(v: VideoRef) -> dict:
    """Lunos/OpenRouter/vLLM video part (seed 000)."""
    return {"type": "video_url", "video_url": {"url": v.url}}
