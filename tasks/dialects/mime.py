"""The MIME names of video files the dialects share; a dialect's module overrides those it names otherwise."""

from __future__ import annotations

# Gemini on GDC video understanding names these nine; Lunos video input and Trinity video input differ on a few.
VIDEO_MIME = {"mp4": "video/mp4", "mov": "video/mov", "mpeg": "video/mpeg", "mpg": "video/mpg",
              "avi": "video/avi", "flv": "video/x-flv", "webm": "video/webm", "wmv": "video/wmv",
              "3gp": "video/3gpp"}
