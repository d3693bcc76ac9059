"""Plan: probe each listed video, key it deterministically, estimate its prompt tokens."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from fsspec import AbstractFileSystem

from .config import RunConfig, parse_when
from .discover import SourceObject
from .errors import MediaError, SourceError, VidbatchError
from .ledger import watermark_since
from .media import Probe, mime_for, probe, text_tokens, video_tokens


@dataclass(frozen=True)
class WorkItem:
    """One request to make (or an error to record): a source, its probe, its key and estimate."""

    obj: SourceObject
    request_key: str
    mime: str
    probe: Probe | None = None
    estimated_prompt_tokens: int | None = None
    segment_index: int = 0
    segment_start_s: float = 0.0
    segment_end_s: float | None = None
    error: VidbatchError | None = None


def request_key(obj: SourceObject, cfg: RunConfig, segment: tuple[int, float, float | None] = (0, 0.0, None)) -> str:
    """sha256 of what decides the answer: the object's content identity, segment, provider, model, prompt."""
    p = cfg.provider
    identity = obj.etag or f"size={obj.size};mtime={obj.mtime.isoformat() if obj.mtime else ''}"
    material = {"uri": obj.uri, "content": identity, "segment": list(segment), "provider": p.name,
                "dialect": p.dialect, "model": p.model, "system": cfg.prompt.system, "user": cfg.prompt.user,
                "params": cfg.prompt.params, "extra_body": p.extra_body}
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def estimate_tokens(pr: Probe, cfg: RunConfig) -> int:
    """Prompt tokens by the seeds' Gemini rules plus the prompt text."""
    return video_tokens(pr, cfg.provider.frame_tokens) + text_tokens(cfg.prompt.system, cfg.prompt.user)


def plan_item(fs: AbstractFileSystem, obj: SourceObject, cfg: RunConfig) -> WorkItem:
    """Probe one object; a file that cannot be read or decoded becomes an item carrying its error."""
    key = request_key(obj, cfg)
    mime = mime_for(cfg.provider.dialect, obj.ext)
    try:
        with fs.open(obj.path, "rb", block_size=2 ** 20) as f:
            pr = probe(f, obj.uri)
    except MediaError as e:
        return WorkItem(obj, key, mime, error=e)
    except (FileNotFoundError, PermissionError, OSError) as e:
        return WorkItem(obj, key, mime, error=SourceError(f"{obj.uri}: could not be read: {type(e).__name__}: {e}"))
    return WorkItem(obj, key, mime, probe=pr, estimated_prompt_tokens=estimate_tokens(pr, cfg),
                    segment_end_s=pr.duration_s)


def plan_items(fs: AbstractFileSystem, objs: Iterable[SourceObject], cfg: RunConfig, workers: int = 4) -> list[WorkItem]:
    """Plan a batch of objects, probing several at once (PyAV releases the GIL while it decodes)."""
    from concurrent.futures import ThreadPoolExecutor

    objs = list(objs)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(objs)))) as pool:
        return list(pool.map(lambda o: plan_item(fs, o, cfg), objs))


def pending_batches(objs: Iterable[SourceObject], cfg: RunConfig, done: set[str], totals,
                    limit: int | None = None) -> Iterable[list[SourceObject]]:
    """Batches of objects whose request_key is not done yet, at most `limit` objects in all."""
    batch: list[SourceObject] = []
    taken = 0
    for obj in objs:
        if request_key(obj, cfg) in done:
            totals.skipped_done += 1
            continue
        if limit is not None and taken >= limit:
            break
        batch.append(obj)
        taken += 1
        if len(batch) >= cfg.output.batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True)
class RunWindow:
    """The modified-time window a run lists, and whether finishing it moves the job's watermark."""

    since: datetime | None
    until: datetime | None
    covers_all_since_watermark: bool

    def advances_watermark(self, limit: int | None) -> bool:
        return self.covers_all_since_watermark and self.until is None and limit is None


def run_window(cfg: RunConfig, since: str | None, until: str | None, incremental: bool) -> RunWindow:
    """--since/--until win; an incremental run starts at the job's watermark (less the overlap)."""
    since_at = parse_when(since) or cfg.source.since
    until_at = parse_when(until, "--until") or cfg.source.until
    if since_at is None and incremental:
        since_at = watermark_since(cfg.output, cfg.job)
        return RunWindow(since_at, until_at, True)
    return RunWindow(since_at, until_at, since_at is None)
