"""Compaction: merge a partition's small Parquet files into one, keeping the latest row per request_key.

On a local filesystem the new partition directory replaces the old one in one atomic
renameat2(RENAME_EXCHANGE): a reader lists either the old files or the new one, never both or
neither (a reader whose listing straddles the swap gets FileNotFoundError and reads again, as
tasks.record.ledger.read_rows does). Object stores have no atomic multi-object switch: the compacted
file is written before the old ones are deleted, so for a moment a plain reader may see a row
twice; vidbatch's own readers drop such identical copies.
"""

from __future__ import annotations

import ctypes
import errno
import os
import uuid
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from tasks.config.run import OutputConfig
from tasks.errors import VidbatchError
from tasks.record.ledger import SCHEMA
from tasks.record.state import StateStore
from tasks.record.tables import latest_rows, open_output, parquet_bytes, put_atomic

_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


@dataclass
class CompactReport:
    partitions: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name -> files, rows in, rows out

    def lines(self) -> list[str]:
        return [f"{p}: {f} files, {i} rows -> 1 file, {o} rows" for p, (f, i, o) in sorted(self.partitions.items())]


def exchange(a: str, b: str) -> None:
    """Swap two directories atomically (Linux renameat2 RENAME_EXCHANGE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(_AT_FDCWD, a.encode(), _AT_FDCWD, b.encode(), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"atomic directory exchange failed: {os.strerror(err)}", a)


def _read(fs, paths: list[str]) -> pa.Table:
    return pa.concat_tables([pq.read_table(p, filesystem=fs, schema=SCHEMA) for p in paths])


def _parquet_files(fs, directory: str) -> list[str]:
    return sorted(p for p in fs.ls(directory, detail=False) if p.endswith(".parquet")
                  and not p.rsplit("/", 1)[-1].startswith((".", "_")))


def compact(output: OutputConfig, partitions: list[str] | None = None, min_files: int = 2) -> CompactReport:
    """Compact every date partition holding at least `min_files` files (or only the named ones)."""
    fs, root = open_output(output)
    if not fs.exists(root):
        raise VidbatchError(f"{output.url}: no ledger there")
    report = CompactReport()
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False) if p.rsplit("/", 1)[-1].startswith("date="))
    for name in names:
        if partitions and name not in partitions and name.removeprefix("date=") not in partitions:
            continue
        directory = f"{root}/{name}"
        files = _parquet_files(fs, directory)
        if len(files) < min_files:
            continue
        if isinstance(fs, LocalFileSystem):
            report.partitions[name] = _compact_local(fs, root, name, files)
        else:
            report.partitions[name] = _compact_object_store(fs, directory, files)
    if report.partitions:  # the compacted files are new names to the run state's base: fold them in now
        StateStore(output).refold()
    return report


def _compact_object_store(fs, directory: str, files: list[str]) -> tuple[int, int, int]:
    table = _read(fs, files)
    out = latest_rows(table)
    put_atomic(fs, f"{directory}/compacted-{uuid.uuid4().hex[:12]}.parquet", parquet_bytes(out))
    fs.rm(files)
    return len(files), table.num_rows, out.num_rows


def _compact_local(fs, root: str, name: str, files: list[str]) -> tuple[int, int, int]:
    directory = f"{root}/{name}"
    while True:  # a run may add a file meanwhile: compact until the listing holds still
        table = _read(fs, files)
        out = latest_rows(table)
        staging = f"{root}/.compacting-{uuid.uuid4().hex[:8]}"
        os.makedirs(staging)
        put_atomic(fs, f"{staging}/compacted-{uuid.uuid4().hex[:12]}.parquet", parquet_bytes(out))
        now = _parquet_files(fs, directory)
        if now == files:
            break
        fs.rm(staging, recursive=True)
        files = now
    try:
        exchange(staging, directory)
    except OSError as e:
        fs.rm(staging, recursive=True)
        if e.errno in (errno.EINVAL, errno.ENOSYS, errno.EXDEV):
            raise VidbatchError(f"{directory}: this filesystem cannot swap directories atomically "
                                f"({e.strerror}); compaction would expose a half-done partition, so it stops") from None
        raise
    # staging now holds the old files; one written between the last listing and the swap moves over
    for late in set(_parquet_files(fs, staging)) - {f.replace(directory, staging, 1) for f in files}:
        os.rename(late, late.replace(staging, directory, 1))
    fs.rm(staging, recursive=True)
    return len(files), table.num_rows, out.num_rows
