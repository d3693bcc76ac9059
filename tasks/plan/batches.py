"""Batches of listed objects not finished yet, and the modified-time window a run lists."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from tasks.config.run import RunConfig, parse_when
from tasks.discover.listing import SourceObject
from tasks.plan.items import request_key


def pending_batches(objs: Iterable[SourceObject], cfg: RunConfig,
                    finished: Callable[[dict[str, SourceObject]], set[str]], totals,
                    limit: int | None = None) -> Iterator[dict[str, SourceObject]]:
    """Batches (request_key -> object, in listing order) of objects not finished yet, at most `limit` in all.

    Each listed object's whole-object key is computed once, here; `finished` is asked once per chunk of them which
    are finished, so the run's state is looked up for what the listing brings, never loaded whole."""
    size = max(cfg.output.batch_size, cfg.media.pack.max_videos)  # packs form within a batch
    batch: dict[str, SourceObject] = {}
    taken = 0
    for chunk in _chunks(objs, size):
        keyed = {request_key(obj, cfg): obj for obj in chunk}
        done = finished(keyed)
        for key, obj in keyed.items():
            if key in done:
                totals.skipped_done += 1
                continue
            if limit is not None and taken >= limit:
                break
            batch[key] = obj
            taken += 1
            if len(batch) >= size:
                yield batch
                batch = {}
        if limit is not None and taken >= limit:
            break
    if batch:
        yield batch


def _chunks(objs: Iterable[SourceObject], size: int) -> Iterator[list[SourceObject]]:
    chunk: list[SourceObject] = []
    for obj in objs:
        chunk.append(obj)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass(frozen=True)
class RunWindow:
    """The modified-time window a run lists, and whether finishing it moves the job's watermark."""

    since: datetime | None
    until: datetime | None
    covers_all_since_watermark: bool

    def advances_watermark(self, limit: int | None) -> bool:
        return self.covers_all_since_watermark and self.until is None and limit is None


def run_window(cfg: RunConfig, since: str | None, until: str | None, incremental: bool,
               watermark: datetime | None = None) -> RunWindow:
    """--since/--until win; an incremental run starts at `watermark` (the job's, less the overlap; None: from the
    start)."""
    since_at = parse_when(since) or cfg.source.since
    until_at = parse_when(until, "--until") or cfg.source.until
    if since_at is None and incremental:
        return RunWindow(watermark, until_at, True)
    return RunWindow(since_at, until_at, since_at is None)
