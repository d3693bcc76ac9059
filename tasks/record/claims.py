"""One writer per video at a time: a record per run, and an exclusive claim per video before it is sent.

Two runs of one config may overlap (a nightly run and a backfill, a retry by hand). Each run writes
`<output>/_runs/<run_id>.json` (host, pid, start, a heartbeat, its end) before it reads the run state, and
before it sends a video it claims the video's whole-object request key by creating
`<output>/_claims/<kk>/<key>/<n>` exclusively (S3 `If-None-Match: *`, a hard link locally): of two runs
creating the same file, one wins. A claim is respected while its run is alive, and also when its run
ended after this run started: this run's state was read before that run's rows landed, so the video may
be finished. A claim whose run was already over when this run started (ended, or dead: the heartbeat
stopped, or its process is gone on this host) is stale: that run's rows were in the state this run read,
so the video is sent again only if that state says so, and it is taken over by creating the next
generation `<n+1>` (again exclusively; generation 0 stays, so a first claim never races a takeover).

A video claimed by another run is not sent and not recorded by this run; it is counted, the summary
names the other run, and the watermark does not move, so a later run picks up what the other run left.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from fsspec.implementations.local import LocalFileSystem

from tasks.config.run import OutputConfig
from tasks.errors import ConfigError
from tasks.record.tables import now_utc, open_output, put_atomic

log = logging.getLogger(__name__)

RUNS, CLAIMS = "_runs", "_claims"  # beside the partitions: readers skip _ names
HEARTBEAT_S = 20.0  # a live run rewrites its record this often
STALE_S = 120.0  # a run on another host whose record is older than this is taken as dead
GC_MARGIN = timedelta(minutes=10)  # clocks of two hosts may differ: records are removed only well past need
CLAIM_THREADS = 16  # claims of a batch are made side by side: one request each on an object store


@dataclass(frozen=True)
class RunRecord:
    """What `_runs/<run_id>.json` says about a run."""

    run_id: str
    job: str
    host: str
    pid: int
    started_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None

    def alive(self, now: datetime, stale_s: float = STALE_S) -> bool:
        if self.ended_at is not None:
            return False
        if self.host == socket.gethostname():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass  # another user's process: alive
            return True
        return (now - self.updated_at).total_seconds() <= stale_s

    def describe(self) -> str:
        return f"run {self.run_id} (job {self.job!r}, host {self.host}, pid {self.pid}, " \
               f"started {self.started_at:%Y-%m-%d %H:%M:%S} UTC)"

    def to_json(self) -> bytes:
        return json.dumps({"run_id": self.run_id, "job": self.job, "host": self.host, "pid": self.pid,
                           "started_at": self.started_at.isoformat(), "updated_at": self.updated_at.isoformat(),
                           "ended_at": self.ended_at.isoformat() if self.ended_at else None}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RunRecord:
        d = json.loads(data)
        ended = d.get("ended_at")
        return cls(str(d["run_id"]), str(d.get("job", "")), str(d["host"]), int(d["pid"]),
                   datetime.fromisoformat(d["started_at"]), datetime.fromisoformat(d["updated_at"]),
                   datetime.fromisoformat(ended) if ended else None)


def read_record(fs, path: str) -> RunRecord | None:
    """A run's record, or None when it is gone or unreadable (a record cut short is a dead run's)."""
    try:
        return RunRecord.from_json(fs.cat_file(path))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None


def run_alive(output: OutputConfig, run_id: str) -> bool | None:
    """Whether `run_id`'s record says it is alive; None when it has no record (a run of an older vidbatch)."""
    fs, root = open_output(output)
    record = read_record(fs, f"{root}/{RUNS}/{run_id}.json")
    return None if record is None else record.alive(now_utc())


class RunRegistry:
    """This run's record, kept fresh by a heartbeat, and what the other runs' records said when it started."""

    def __init__(self, output: OutputConfig, run_id: str, job: str, heartbeat_s: float = HEARTBEAT_S,
                 clock: Callable[[], datetime] = now_utc):
        self.fs, self.root = open_output(output)
        self.dir = f"{self.root}/{RUNS}"
        self.run_id, self._clock, self._heartbeat_s = run_id, clock, heartbeat_s
        started = clock()
        self.record = RunRecord(run_id, job, socket.gethostname(), os.getpid(), started, started)
        self.over_at_start: set[str] = set()  # runs whose claims are stale for this run
        self._records: dict[str, RunRecord | None] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_heartbeat: list[Callable[[], None]] = []  # e.g. the journal's lease, renewed with the record

    def _path(self, run_id: str) -> str:
        return f"{self.dir}/{run_id}.json"

    def start(self) -> list[RunRecord]:
        """Write this run's record, note which runs are over, remove the records no live run needs; return the
        other runs alive now."""
        put_atomic(self.fs, self._path(self.run_id), self.record.to_json())
        now = self._clock()
        records = self._all_records()
        live = [r for r in records if r.run_id != self.run_id and r.alive(now)]
        self.over_at_start = {r.run_id for r in records if r.run_id != self.run_id and not r.alive(now)}
        self._collect(records, live, now)
        self._thread = threading.Thread(target=self._beat, name=f"vidbatch-run-{self.run_id[:8]}", daemon=True)
        self._thread.start()
        return live

    def _all_records(self) -> list[RunRecord]:
        try:
            paths = [p for p in self.fs.ls(self.dir, detail=False, refresh=True) if p.endswith(".json")]
        except FileNotFoundError:
            return []
        return [r for p in paths if (r := read_record(self.fs, p)) is not None]

    def _collect(self, records: list[RunRecord], live: list[RunRecord], now: datetime) -> None:
        """Remove the records of runs that were over before every live run (this one too) started: no live run
        respects their claims, so nothing needs them. A record that names no end is removed only once its run is
        over by the same test."""
        oldest_live = min([self.record.started_at, *(r.started_at for r in live)])
        gone = [self._path(r.run_id) for r in records
                if r.run_id in self.over_at_start and (r.ended_at or r.updated_at) < oldest_live - GC_MARGIN]
        if gone:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(gone)

    def holder(self, run_id: str) -> RunRecord | None:
        """Another run's record as it is now (cached: a record only ever gains an end, and a removed record's run
        was over before this one started)."""
        if run_id not in self._records:
            self._records[run_id] = read_record(self.fs, self._path(run_id))
        return self._records[run_id]

    def respects(self, run_id: str) -> bool:
        """Whether a claim made by `run_id` binds this run."""
        if run_id == self.run_id or run_id in self.over_at_start:
            return False
        return self.holder(run_id) is not None

    def is_over(self, run_id: str) -> bool:
        """Whether `run_id` has ended or died, by its record as it is now (no record: over long ago)."""
        if run_id == self.run_id:
            return False
        record = read_record(self.fs, self._path(run_id))
        return record is None or not record.alive(self._clock())

    def sweep(self, fs, base: str) -> list[str]:
        """Remove the per-run directories under `base` (`<base>/<run_id>/`: scratch copies, temporary files)
        of runs that are over: what a killed run left. Returns what it removed."""
        try:
            entries = fs.ls(base, detail=True, refresh=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        gone = [e["name"].rstrip("/") for e in entries if e.get("type") == "directory"
                and self.is_over(e["name"].rstrip("/").rsplit("/", 1)[-1])]
        for path in gone:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(path, recursive=True)
        return gone

    def _beat(self) -> None:
        while not self._stop.wait(self._heartbeat_s):
            try:
                self._write(replace(self.record, updated_at=self._clock()))
                for renew in self.on_heartbeat:
                    renew()
            except Exception as exc:  # a storage hiccup must not kill the run; the next beat tries again
                log.warning("run record %s not renewed: %s", self._path(self.run_id), exc)

    def _write(self, record: RunRecord) -> None:
        self.record = record
        put_atomic(self.fs, self._path(self.run_id), record.to_json())

    def stop(self) -> None:
        """Stop the heartbeat (and write nothing): a run that cannot say its rows are all in the ledger stops
        like a dead one, and its claims go stale when its process is gone or its record ages."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def end(self) -> None:
        """Write the end, once every row is in the ledger: this run's claims now bind only runs that started
        before it."""
        self.stop()
        now = self._clock()
        self._write(replace(self.record, updated_at=now, ended_at=now))


class Claims:
    """Exclusive claims on whole-object request keys, made by one run."""

    def __init__(self, registry: RunRegistry):
        self.registry = registry
        self.fs, self.dir = registry.fs, f"{registry.root}/{CLAIMS}"
        self._local = isinstance(self.fs, LocalFileSystem)
        self._claim = json.dumps({"run_id": registry.run_id, "host": registry.record.host,
                                  "pid": registry.record.pid}).encode()

    def claim(self, keys: Iterable[str]) -> dict[str, RunRecord | None]:
        """Claim each key; return those another run holds, with that run's record (None: its record is gone but
        it must still be respected, which cannot happen after `start`: kept for the type)."""
        keys = list(dict.fromkeys(keys))
        with ThreadPoolExecutor(min(CLAIM_THREADS, max(1, len(keys)))) as pool:
            held = dict(zip(keys, pool.map(self._claim_one, keys), strict=True))
        return {k: self.registry.holder(h) for k, h in held.items() if h is not None}

    def _claim_one(self, key: str) -> str | None:
        """None when this run holds `key` now, else the run id that holds it."""
        d = f"{self.dir}/{key[:2]}/{key}"
        if self._create(f"{d}/0"):
            return None
        for _ in range(20):  # each turn another run won a race on this key: it holds it, or it is stale too
            try:
                gens = sorted(int(p.rsplit("/", 1)[1]) for p in self.fs.ls(d, detail=False, refresh=True)
                              if p.rsplit("/", 1)[1].isdigit())
                top = gens[-1]
                holder = json.loads(self.fs.cat_file(f"{d}/{top}"))["run_id"]
            except (FileNotFoundError, IndexError):
                continue  # a superseded generation went between listing and reading it
            except (ValueError, KeyError) as exc:
                raise ConfigError(f"output claim {d}/{top} is not a claim vidbatch wrote ({exc}): remove it") from exc
            if holder == self.registry.run_id:
                return None
            if not self.registry.respects(holder):
                if not self._create(f"{d}/{top + 1}"):
                    continue
                with contextlib.suppress(FileNotFoundError):  # generation 0 stays: a first claim tries only it
                    self.fs.rm([f"{d}/{g}" for g in gens if g > 0])
                return None
            return holder
        raise ConfigError(f"output claim {d}: lost 20 races in a row to other runs")

    def _create(self, path: str) -> bool:
        """Create `path` holding this run's claim unless it exists: True when this call created it."""
        if self._local:
            directory = path.rsplit("/", 1)[0]
            os.makedirs(directory, exist_ok=True)
            tmp = f"{directory}/.{uuid.uuid4().hex}.partial"
            with open(tmp, "wb") as f:
                f.write(self._claim)
            try:
                os.link(tmp, path)  # atomic, and fails when the name exists
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        try:
            self.fs.pipe_file(path, self._claim, mode="create")  # s3fs: If-None-Match: *; others: their own
            return True
        except FileExistsError:
            return False
