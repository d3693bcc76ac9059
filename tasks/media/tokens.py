"""Prompt-token estimates by the Gemini token rules (Gemini on GDC video understanding)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # an annotation only: the rules import without PyAV (tasks/config names FRAME_TOKENS)
    from tasks.media.probe import Probe

FRAME_TOKENS = 258  # per sampled frame; a provider profile's frame_tokens overrides it


TIMESTAMP_TOKENS = 7  # per sampled second


AUDIO_TOKENS_PER_S = 32


def sampled_seconds(duration_s: float, fps: float) -> int:
    """Seconds sampled at 1 frame/s: the distinct whole seconds that hold a frame."""
    frame = 1.0 / fps if fps > 0 else 0.0
    return max(1, math.floor(max(0.0, duration_s - frame) + 1e-9) + 1)


def text_tokens(*texts: str) -> int:
    """Text tokens as the offline provider counts them: ceil(chars / 4) per text."""
    return sum(math.ceil(len(t) / 4) for t in texts if t)


def video_tokens(p: Probe, frame_tokens: int = FRAME_TOKENS) -> int:
    """The Gemini token rules: per sampled second a frame, a timestamp and, with audio, 32 audio tokens."""
    per_second = frame_tokens + TIMESTAMP_TOKENS + (AUDIO_TOKENS_PER_S if p.has_audio else 0)
    return sampled_seconds(p.duration_s, p.fps) * per_second
