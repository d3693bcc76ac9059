"""Packs: several videos or segments of one group sent in one request, within the provider's limits."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from itertools import groupby

from tasks.config.run import RunConfig
from tasks.media.tokens import Estimate
from tasks.plan.items import WorkItem


def pack_id(pack: list[WorkItem]) -> str:
    if len(pack) == 1:
        return pack[0].request_key
    return hashlib.sha256("|".join(i.request_key for i in pack).encode()).hexdigest()


def _group(item: WorkItem, by: str) -> tuple:
    directory = item.obj.path.rsplit("/", 1)[0]
    if by == "none":
        return ()
    if by == "directory":
        return (directory,)
    hour = item.obj.mtime.strftime("%Y-%m-%dT%H") if item.obj.mtime else ""
    return directory, hour


def make_packs(items: list[WorkItem], cfg: RunConfig) -> list[list[WorkItem]]:
    """Requests to send: single items, or up to pack.max_videos items of one group within the bytes per request."""
    n, by = cfg.media.pack.max_videos, cfg.media.pack.group_by
    if n == 1:
        return [[i] for i in items]
    max_bytes = cfg.provider.media.max_bytes_per_request
    packs: list[list[WorkItem]] = [[i] for i in items if i.error is not None]
    good = [i for i in items if i.error is None]
    for _, members in groupby(sorted(good, key=lambda i: _group(i, by)), key=lambda i: _group(i, by)):
        pack: list[WorkItem] = []
        for item in members:
            size = planned_size(item)
            if pack and (len(pack) >= n or max_bytes and sum(map(planned_size, pack)) + size > max_bytes):
                packs.append(pack)
                pack = []
            pack.append(item)
        if pack:
            packs.append(pack)
    return packs


def planned_size(item: WorkItem) -> int:
    """The bytes a segment is expected to take: its share of the source."""
    if item.segment_count == 1 or not item.probe or not item.duration_s:
        return item.obj.size
    return int(item.obj.size * item.duration_s / item.probe.duration_s)


def pack_estimate(pack: list[WorkItem]) -> Estimate | None:
    """A request's estimate: its items' together, the prompt text once."""
    if any(i.estimate is None for i in pack):
        return None
    first, *rest = [i.estimate for i in pack if i.estimate is not None]
    return sum((replace(e, text=0, output=0) for e in rest), first)  # one prompt text and one answer per request
