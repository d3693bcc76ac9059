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
    """The start of a job's last successful run: objects modified since then are new."""

    job: str
    started_at: datetime
    run_id: str


def _state_path(root: str, job: str) -> str:
    return f"{root}/{STATE}/{job}.watermark.json"


def read_watermark(output: OutputConfig, job: str) -> Watermark | None:
    fs, root = open_output(output)
    try:
        data = json.loads(fs.cat_file(_state_path(root, job)))
    except FileNotFoundError:
        return None
    return Watermark(job, datetime.fromisoformat(data["started_at"]), data["run_id"])


def write_watermark(output: OutputConfig, mark: Watermark) -> None:
    fs, root = open_output(output)
    body = {"job": mark.job, "started_at": mark.started_at.isoformat(), "run_id": mark.run_id,
            "written_at": now_utc().isoformat()}
    put_atomic(fs, _state_path(root, mark.job), json.dumps(body, indent=1).encode())


def watermark_since(output: OutputConfig, job: str) -> datetime | None:
    """Where an incremental run starts listing: the last successful run's start, less the overlap."""
    mark = read_watermark(output, job)
    return mark.started_at - timedelta(seconds=output.watermark_overlap_s) if mark else None
