"""Batches of listed objects not finished yet, and the modified-time window a run lists."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from tasks.config.run import RunConfig, parse_when
from tasks.discover.listing import SourceObject
from tasks.plan.items import request_key


def pending_batches(objs: Iterable[SourceObject], cfg: RunConfig, done: set[str], totals,
                    limit: int | None = None) -> Iterable[list[SourceObject]]:
    """Batches of objects not finished yet (by their whole-object key), at most `limit` objects in all."""
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
        if len(batch) >= max(cfg.output.batch_size, cfg.media.pack.max_videos):  # packs form within a batch
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


def run_window(cfg: RunConfig, since: str | None, until: str | None, incremental: bool,
               watermark: datetime | None = None) -> RunWindow:
    """--since/--until win; an incremental run starts at `watermark` (the job's, less the overlap; None: from the
    start)."""
    since_at = parse_when(since) or cfg.source.since
    until_at = parse_when(until, "--until") or cfg.source.until
    if since_at is None and incremental:
        return RunWindow(watermark, until_at, True)
    return RunWindow(since_at, until_at, since_at is None)
