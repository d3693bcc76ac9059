"""Prompt-token estimates by the Gemini token rules (Gemini on GDC video understanding)."""

from __future__ import annotations

import math
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Estimate:
    """A prompt-token estimate by modality (sampled frames, audio, timestamps, the prompt text), and the output
    tokens an answer is expected to take (not part of `total`, the prompt's tokens)."""

    frames: int = 0
    audio: int = 0
    timestamps: int = 0
    text: int = 0
    output: int = 0

    @property
    def total(self) -> int:
        return self.frames + self.audio + self.timestamps + self.text

    def __add__(self, other: Estimate) -> Estimate:
        return Estimate(self.frames + other.frames, self.audio + other.audio, self.timestamps + other.timestamps,
                        self.text + other.text, self.output + other.output)


def video_estimate(p: Probe, frame_tokens: int = FRAME_TOKENS, audio: bool | None = None) -> Estimate:
    """video_tokens split by modality; `audio` False counts a video sent without its audio stream."""
    seconds = sampled_seconds(p.duration_s, p.fps)
    with_audio = p.has_audio if audio is None else audio and p.has_audio
    return Estimate(frames=seconds * frame_tokens, audio=seconds * AUDIO_TOKENS_PER_S if with_audio else 0,
                    timestamps=seconds * TIMESTAMP_TOKENS)
