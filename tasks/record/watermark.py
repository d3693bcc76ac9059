"""A job's watermark: the start of its last complete run, where an incremental run starts listing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from tasks.config.run import OutputConfig
from tasks.record.journal import STATE
from tasks.record.tables import now_utc, open_output, put_atomic


@dataclass(frozen=True)
class Watermark:
    """The start of a job's last successful run over one source: objects modified since then are new."""

    job: str
    started_at: datetime
    run_id: str
    source: str | None = None  # the source.url it was written for (None: written before watermarks had one)


def _state_path(root: str, job: str) -> str:
    return f"{root}/{STATE}/{job}.watermark.json"


def _read(output: OutputConfig, job: str) -> dict | None:
    fs, root = open_output(output)
    try:
        return json.loads(fs.cat_file(_state_path(root, job)))
    except FileNotFoundError:
        return None


def read_watermark(output: OutputConfig, job: str, source: str | None = None) -> Watermark | None:
    """The job's watermark for `source` (None: the one written last, whatever its source).

    A watermark belongs to a source URL: after source.url changes (a fixed typo, a new prefix), the new source
    starts from the beginning. A file written before watermarks named their source holds for any source."""
    data = _read(output, job)
    if data is None:
        return None
    if source is not None and "sources" in data:
        data = data["sources"].get(source)
        if data is None:
            return None
    return Watermark(job, datetime.fromisoformat(data["started_at"]), data["run_id"], data.get("source", source))


def write_watermark(output: OutputConfig, mark: Watermark) -> None:
    fs, root = open_output(output)
    entry = {"job": mark.job, "started_at": mark.started_at.isoformat(), "run_id": mark.run_id,
             "source": mark.source, "written_at": now_utc().isoformat()}
    old = _read(output, mark.job) or {}
    sources = dict(old.get("sources", {}))
    if mark.source is not None:
        sources[mark.source] = entry
    put_atomic(fs, _state_path(root, mark.job), json.dumps({**entry, "sources": sources}, indent=1).encode())


def watermark_since(output: OutputConfig, job: str, source: str | None = None) -> datetime | None:
    """Where an incremental run starts listing: the last successful run's start, less the overlap."""
    mark = read_watermark(output, job, source)
    return mark.started_at - timedelta(seconds=output.watermark_overlap_s) if mark else None
