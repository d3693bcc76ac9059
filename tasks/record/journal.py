"""The journal: each finished row written at once beside the ledger, moved in by the next run after a crash."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from tasks.config.run import OutputConfig
from tasks.record.claims import run_alive
from tasks.record.ledger import ROW_IDENTITY, SCHEMA, to_table
from tasks.record.tables import (
    PARTIAL,
    now_utc,
    open_output,
    parquet_bytes,
    partition_dates,
    put_atomic,
    read_partitions,
    write_table,
)

JOURNAL, STATE, LEASE = "_journal", "_state", "lease.json"  # beside the partitions: readers skip _ and . names


class LedgerWriter:
    """Journals each finished row at once and flushes rows to the ledger every N rows or T seconds."""

    def __init__(self, output: OutputConfig, run_id: str, clock=time.monotonic):
        self.output, self.run_id, self._clock = output, run_id, clock
        self.fs, self.root = open_output(output)
        self.journal_dir = f"{self.root}/{JOURNAL}/{run_id}"
        self._rows: list[dict] = []
        self._journaled: list[str] = []
        self._last_flush = clock()
        self.files: list[str] = []
        self.rows_written = 0
        # rows arrive from several threads (asyncio.to_thread): a flush must not drop one
        self._lock = threading.RLock()
        if output.journal:
            self._lease()

    def _lease(self) -> None:
        """Say this run is alive, so that no other run takes over its journal."""
        lease = {"host": socket.gethostname(), "pid": os.getpid(), "updated_at": now_utc().isoformat()}
        put_atomic(self.fs, f"{self.journal_dir}/{LEASE}", json.dumps(lease).encode())

    def add(self, row: dict) -> None:
        """Record one finished row: journal it, then flush if the policy says so."""
        if self.output.journal:
            path = f"{self.journal_dir}/{uuid.uuid4().hex}.jrnl"
            put_atomic(self.fs, path, parquet_bytes(to_table([row])))
        with self._lock:
            if self.output.journal:
                self._journaled.append(path)
            self._rows.append(row)
            if len(self._rows) >= self.output.flush_rows or \
                    self._clock() - self._last_flush >= self.output.flush_seconds:
                self.flush()

    def flush(self) -> None:
        """Write the buffered rows as ledger files, then drop their journal entries."""
        with self._lock:
            self._last_flush = self._clock()
            if self._rows:
                self.files += write_table(to_table(self._rows), self.output, self.run_id)
                self.rows_written += len(self._rows)
                if self._journaled:
                    self.fs.rm(self._journaled)
                self._rows, self._journaled = [], []
            if self.output.journal:
                self._lease()

    def close(self) -> None:
        """Flush what is left and remove this run's journal."""
        self.flush()
        if self.output.journal and self.fs.exists(self.journal_dir):
            self.fs.rm(self.journal_dir, recursive=True)
        staging = f"{self.root}/{PARTIAL}/{self.run_id}"  # emptied by each write's rename: the directory itself
        if isinstance(self.fs, LocalFileSystem) and os.path.isdir(staging):
            with contextlib.suppress(OSError):
                os.rmdir(staging)


def _lease_expired(fs, run_dir: str, stale_after_s: float) -> bool:
    """A run is dead when its lease names a process of this host that is gone, or was not renewed in time."""
    try:
        lease = json.loads(fs.cat_file(f"{run_dir}/{LEASE}"))
        updated = datetime.fromisoformat(lease["updated_at"])
    except (FileNotFoundError, ValueError, KeyError):
        return True
    if lease.get("host") == socket.gethostname():
        try:
            os.kill(int(lease["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            pass
    return (now_utc() - updated).total_seconds() > stale_after_s


def _journal_dead(output: OutputConfig, fs, run_dir: str, stale_after_s: float) -> bool:
    """The run's record (tasks/record/claims.py, renewed by a heartbeat) decides; a run of an older vidbatch has
    none, and its journal's lease does."""
    alive = run_alive(output, run_dir.rstrip("/").rsplit("/", 1)[1])
    return _lease_expired(fs, run_dir, stale_after_s) if alive is None else not alive


def recover_journal(output: OutputConfig, recovering_run: str) -> int:
    """Move rows journaled by runs that died into the ledger; return how many were recovered."""
    fs, root = open_output(output)
    fs.invalidate_cache()
    try:
        run_dirs = [d for d in fs.ls(f"{root}/{JOURNAL}", detail=False) if not d.endswith("/" + recovering_run)]
    except FileNotFoundError:
        return 0
    stale_after = 2 * output.flush_seconds + 120
    dead = [d for d in run_dirs if fs.isdir(d) and _journal_dead(output, fs, d, stale_after)]
    paths = sorted(p for d in dead for p in fs.ls(d, detail=False) if p.endswith(".jrnl"))
    tables = []
    for p in paths:
        try:
            tables.append(pq.read_table(io.BytesIO(fs.cat_file(p)), schema=SCHEMA))
        except (pa.ArrowInvalid, OSError):
            continue  # cut short by the crash itself: that row was never whole, the rerun sends it again
    journal = pa.concat_tables(tables) if tables else to_table([])
    existing = None
    if journal.num_rows:  # a copy already flushed has the same created_at: only those partitions, only these keys
        existing = read_partitions(output, SCHEMA, partition_dates(journal["created_at"]).to_pylist(),
                                   pc.field("request_key").isin(pc.unique(journal["request_key"])),
                                   list(ROW_IDENTITY))
    if existing is not None:
        seen = set(zip(*(existing[c].to_pylist() for c in ROW_IDENTITY), strict=True))
        keep = [ident not in seen for ident in zip(*(journal[c].to_pylist() for c in ROW_IDENTITY), strict=True)]
        journal = journal.filter(pa.array(keep, pa.bool_()))
    write_table(journal, output, recovering_run, label="recovered")
    for d in dead:
        fs.rm(d, recursive=True)
    return journal.num_rows
