"""Plan: probe each listed video, fit it to the provider's limits, key it deterministically, estimate its tokens."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace

from fsspec import AbstractFileSystem

from tasks.config.run import RunConfig
from tasks.dialects.registry import mime_for
from tasks.discover.listing import SourceObject
from tasks.errors import LimitError, MediaError, SourceError, VidbatchError
from tasks.media.probe import Probe, probe
from tasks.media.tokens import Estimate, text_tokens, video_estimate


def prompt_text_tokens(cfg: RunConfig) -> int:
    return text_tokens(cfg.prompt.system, cfg.prompt.user)


SEGMENT_MARGIN_S = 0.5  # container and decoded durations differ by a frame or two: cut a little under the limit


@dataclass(frozen=True)
class WorkItem:
    """One video or segment to send (or an error to record): its source, probe, key, window and estimate."""

    obj: SourceObject
    request_key: str
    mime: str
    probe: Probe | None = None
    estimated_prompt_tokens: int | None = None
    segment_index: int = 0
    segment_start_s: float = 0.0
    segment_end_s: float | None = None
    error: VidbatchError | None = None
    source_key: str = ""
    segment_count: int = 1
    ext: str = ""                   # the container sent (mp4 after a transcode)
    ops: tuple[str, ...] = ()       # what prepare must do first: "cut", "transcode", "shrink", "drop_audio"
    estimate: Estimate | None = None  # estimated_prompt_tokens by modality

    @property
    def duration_s(self) -> float | None:
        return None if self.segment_end_s is None else self.segment_end_s - self.segment_start_s


def request_key(obj: SourceObject, cfg: RunConfig, segment: tuple[int, float, float | None] = (0, 0.0, None)) -> str:
    """sha256 of what decides the answer: the object's content identity, segment, provider, model, prompt."""
    p = cfg.provider
    identity = obj.etag or f"size={obj.size};mtime={obj.mtime.isoformat() if obj.mtime else ''}"
    material = {"uri": obj.uri, "content": identity, "segment": list(segment), "provider": p.name,
                "dialect": p.dialect, "model": p.model, "system": cfg.prompt.system, "user": cfg.prompt.user,
                "params": cfg.prompt.params, "extra_body": p.extra_body}
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def estimate_tokens(pr: Probe, cfg: RunConfig, seconds: float | None = None, with_text: bool = True) -> int:
    """Prompt tokens by the Gemini token rules (for `seconds` of the video) plus the prompt text."""
    return estimate_split(pr, cfg, seconds, with_text).total


def estimate_split(pr: Probe, cfg: RunConfig, seconds: float | None = None, with_text: bool = True) -> Estimate:
    """estimate_tokens by modality; with media.audio drop the audio stream is not sent, so it counts nothing."""
    if seconds is not None:
        pr = replace(pr, duration_s=seconds)
    text = text_tokens(cfg.prompt.system, cfg.prompt.user) if with_text else 0
    video = video_estimate(pr, cfg.provider.frame_tokens, audio=cfg.media.audio == "keep")
    return Estimate(video.frames, video.audio, video.timestamps, text)


def _error_item(obj: SourceObject, cfg: RunConfig, key: str, err: VidbatchError) -> list[WorkItem]:
    return [WorkItem(obj, key, mime_for(cfg.provider.dialect, obj.ext), error=err, source_key=key, ext=obj.ext)]


def plan_item(fs: AbstractFileSystem, obj: SourceObject, cfg: RunConfig) -> list[WorkItem]:
    """Probe one object and fit it to the provider's limits: segments, a transcode, or an error naming the limit."""
    key = request_key(obj, cfg)
    limits, dialect = cfg.provider.media, cfg.provider.dialect
    try:
        with fs.open(obj.path, "rb", block_size=2 ** 20) as f:
            pr = probe(f, obj.uri, obj.size or None)
    except MediaError as e:
        return _error_item(obj, cfg, key, e)
    except (FileNotFoundError, PermissionError, OSError) as e:
        return _error_item(obj, cfg, key, SourceError(f"{obj.uri}: could not be read: {type(e).__name__}: {e}"))
    max_duration = min((m for m in (cfg.media.max_duration_s, limits.max_duration_s) if m is not None), default=None)
    if max_duration is not None and pr.duration_s > max_duration:
        where = "media.max_duration_s" if max_duration == cfg.media.max_duration_s else \
            f"provider {cfg.provider.name!r}'s media.max_duration_s"
        return _error_item(obj, cfg, key, LimitError(
            f"{obj.uri}: {pr.duration_s:,.1f} s is longer than {where} ({max_duration:g} s); not sent"))
    ops: list[str] = []
    ext = obj.ext
    mime = mime_for(dialect, ext)
    if limits.mime_types and mime not in limits.mime_types:
        if not cfg.media.transcode:
            return _error_item(obj, cfg, key, LimitError(
                f"{obj.uri}: {mime} is not accepted by provider {cfg.provider.name!r} (accepted: "
                f"{', '.join(limits.mime_types)}); set media.transcode: true to send it as mp4"))
        ops.append("transcode")
        ext, mime = "mp4", mime_for(dialect, "mp4")
    sends_audio = pr.has_audio and cfg.media.audio == "keep"
    max_s = limits.max_seconds(sends_audio)  # GDC: 100 s with audio, 120 s without (also once it is dropped)
    windows = [(0.0, pr.duration_s)]
    if max_s is not None and pr.duration_s > max_s - SEGMENT_MARGIN_S:
        from tasks.media.segment import keyframe_times, plan_segments

        try:
            keyframes = None
            if cfg.media.cut_mode != "reencode":
                with fs.open(obj.path, "rb", block_size=2 ** 20) as f:
                    keyframes = keyframe_times(f)
            windows = plan_segments(pr.duration_s, max_s, cfg.media.segment_target_s, cfg.media.segment_overlap_s,
                                    keyframes, margin_s=SEGMENT_MARGIN_S)
        except MediaError as e:
            return _error_item(obj, cfg, key, e)
        ops.append("cut")
    if limits.max_bytes_per_video and obj.size > limits.max_bytes_per_video and len(windows) == 1:
        if not cfg.media.shrink:
            return _error_item(obj, cfg, key, LimitError(
                f"{obj.uri}: {obj.size:,} bytes is over provider {cfg.provider.name!r}'s limit of "
                f"{limits.max_bytes_per_video:,} bytes per video; set media.shrink: true to re-encode it smaller"))
        ops.append("shrink")
    if pr.has_audio and not sends_audio:
        ops.append("drop_audio")
    items = []
    for i, (start, end) in enumerate(windows):
        segment = (i, round(start, 3), round(end, 3)) if len(windows) > 1 else (0, 0.0, None)
        items.append(WorkItem(
            obj, request_key(obj, cfg, segment) if len(windows) > 1 else key, mime, probe=pr,
            estimated_prompt_tokens=(split := estimate_split(pr, cfg, end - start)).total, estimate=split,
            segment_index=i,
            segment_start_s=round(start, 3), segment_end_s=round(end, 3), source_key=key,
            segment_count=len(windows), ext=ext, ops=tuple(ops)))
    return items


def plan_items(fs: AbstractFileSystem, objs: Iterable[SourceObject], cfg: RunConfig,
               workers: int = 4) -> list[WorkItem]:
    """Plan a batch of objects, probing several at once (PyAV releases the GIL while it decodes)."""
    from concurrent.futures import ThreadPoolExecutor

    objs = list(objs)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(objs)))) as pool:
        return [item for items in pool.map(lambda o: plan_item(fs, o, cfg), objs) for item in items]


def unfinished(items: list[WorkItem], done: set[str], totals) -> list[WorkItem]:
    """Drop the segments a previous run finished (their video was only partly done)."""
    todo = [i for i in items if i.request_key not in done]
    totals.skipped_done += len(items) - len(todo)
    return todo


def empty_item(obj: SourceObject, cfg: RunConfig, key: str | None = None) -> WorkItem:
    """A zero-byte object as an item to record (never to send); `key` is its request_key when known."""
    key = key or request_key(obj, cfg)
    return WorkItem(obj, key, mime_for(cfg.provider.dialect, obj.ext), source_key=key, ext=obj.ext)
