"""Run state without the whole history in memory: the latest row per request_key, looked up by source URI.

The store is the ledger itself plus a derived, rebuildable index beside it, `_state/latest/`:

- a **base**: one Parquet file holding the latest row of every request_key of the ledger files it covers
  (the state columns only), sorted by `source_uri` in row groups of 8,192 rows, so that the row-group
  statistics (min/max `source_uri`) find the few groups that can hold a listed object;
- a **manifest** (`<stamp>-<id>.json`, written last and atomically) naming the base and the ledger files
  (per date partition) it covers.

Everything the manifest does not cover (files flushed since, journal recoveries, compacted partitions, a
second run's files, a ledger written before this store existed) is the **delta**, read whole at open: its
latest rows win over the base's. A fold (when the delta passes `FOLD_ROWS`, or by `compact`) writes a new
base from base + delta with DuckDB under a memory limit and streams it out with pyarrow. Any number of runs
may open, read and fold at once: a base is only ever read through its own manifest, so a reader sees a
base and exactly the files it covers, or an older one and more delta; either gives the same answer.
Deleting the store loses nothing: the next open rebuilds it from the ledger (that is also the migration of
an existing ledger, once, atomically).
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from tasks.config.run import OutputConfig
from tasks.record.journal import STATE
from tasks.record.ledger import SCHEMA, KeyState, finished_keys, finished_sources, latest_rows, ledger_dataset
from tasks.record.tables import now_utc, open_output, put_atomic

LATEST = f"{STATE}/latest"
STATE_COLUMNS = ["source_uri", "request_key", "source_key", "status", "error_type", "segment_count", "created_at"]
FOLD_ROWS = 250_000       # delta rows past which the next open folds them into a new base
ROW_GROUP = 8_192
BASE_SUFFIX = ".pq"       # a Parquet file, named so that a `ledger/**/*.parquet` glob (DuckDB's) never reads it as rows
KEEP_BASES = 2            # the newest bases kept (a reader may still be on the one before)
DUCKDB_MEMORY = "256MB"


@dataclass
class StoreStats:
    base_rows: int = 0
    base_groups: int = 0
    groups_read: int = 0
    delta_files: int = 0
    delta_rows: int = 0
    folded: bool = False
    lookups: int = 0


@dataclass
class _Base:
    path: str
    covered: dict[str, set[str]]   # partition dir name -> ledger file names
    mins: list[str] = field(default_factory=list)
    maxs: list[str] = field(default_factory=list)
    rows: int = 0


def _partition_and_name(path: str) -> tuple[str, str]:
    parts = path.rstrip("/").split("/")
    return parts[-2], parts[-1]


def _as_state(table: pa.Table) -> pa.Table:
    """The state columns of ledger rows (older rows without source_key / segment_count: the key itself, 1)."""
    cols = {c: table[c] for c in STATE_COLUMNS}
    cols["source_key"] = pc.coalesce(table["source_key"], table["request_key"])
    cols["segment_count"] = pc.coalesce(table["segment_count"], pa.scalar(1, pa.int32()))
    return pa.table(cols)


def _last_of_each_key(tables: Iterable[pa.Table]) -> Iterable[pa.Table]:
    """From tables sorted so that a key's rows are adjacent (across table boundaries too), each key's last row."""
    carry: pa.Table | None = None
    for t in tables:
        if t.num_rows == 0:
            continue
        t = pa.concat_tables([carry, t]) if carry is not None else t
        keys = t["request_key"]
        n = t.num_rows
        if n > 1:
            keep = pc.not_equal(keys.slice(0, n - 1), keys.slice(1))
            yield t.slice(0, n - 1).filter(keep)
        carry = t.slice(n - 1)  # its run may go on in the next table
    if carry is not None:
        yield carry


class StateStore:
    """The latest state of the ledger's request_keys, looked up for a batch of listed source URIs."""

    def __init__(self, output: OutputConfig, fold_rows: int = FOLD_ROWS):
        self.output, self.fold_rows = output, fold_rows
        self.fs, self.root = open_output(output)
        self.stats = StoreStats()
        self._base: _Base | None = None
        self._delta = _as_state(SCHEMA.empty_table())
        self._file: pq.ParquetFile | None = None
        self._delta_files: list[str] = []

    # -- opening -------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, output: OutputConfig, fold_rows: int = FOLD_ROWS) -> StateStore:
        store = cls(output, fold_rows)
        store.refresh()
        if store.stats.delta_rows > fold_rows:
            store.fold()  # streams the files through DuckDB: the delta is never held whole
        else:
            store.load_delta()
        return store

    def refold(self) -> None:
        """Fold whatever the base does not cover, however small (after a compaction renamed the files)."""
        self.refresh()
        self.fold()

    def _manifests(self) -> list[str]:
        try:
            names = self.fs.ls(f"{self.root}/{LATEST}", detail=False)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.endswith(".json"))

    def _read_base(self) -> _Base | None:
        for manifest in reversed(self._manifests()):
            try:
                body = json.loads(self.fs.cat_file(manifest))
                path = f"{self.root}/{LATEST}/{body['base']}"
                meta = pq.ParquetFile(self.fs.open(path, "rb")).metadata
            except (FileNotFoundError, OSError, ValueError, KeyError):
                continue  # a manifest whose base a later fold removed (or a torn write): the one before it
            base = _Base(path, {p: set(names) for p, names in body["covered"].items()}, rows=meta.num_rows)
            col = meta.schema.to_arrow_schema().get_field_index("source_uri")
            for g in range(meta.num_row_groups):
                st = meta.row_group(g).column(col).statistics
                if st is None or not st.has_min_max:
                    base.mins.append("")
                    base.maxs.append("\U0010ffff")  # no statistics: a group that may hold anything
                else:
                    base.mins.append(st.min)
                    base.maxs.append(st.max)
            return base
        return None

    def refresh(self) -> None:
        """Read the newest base's manifest and find the ledger files it does not cover (the delta), counting their
        rows from the Parquet footers only."""
        self._base = self._read_base()
        self._file = pq.ParquetFile(self.fs.open(self._base.path, "rb")) if self._base else None
        data = ledger_dataset(self.output)
        files = list(data.files) if data is not None else []
        covered = self._base.covered if self._base else {}
        self._delta_files = [f for f in files
                             if _partition_and_name(f)[1] not in covered.get(_partition_and_name(f)[0], set())]
        rows = ds.dataset(self._delta_files, filesystem=self.fs, format="parquet").count_rows() \
            if self._delta_files else 0
        self._delta = _as_state(SCHEMA.empty_table())
        self.stats = StoreStats(base_rows=self._base.rows if self._base else 0,
                                base_groups=len(self._base.mins) if self._base else 0,
                                delta_files=len(self._delta_files), delta_rows=rows)

    def load_delta(self) -> None:
        """The delta's latest rows, in memory (it is at most about FOLD_ROWS rows: a larger one is folded first)."""
        if self._delta_files:
            t = ds.dataset(self._delta_files, filesystem=self.fs, format="parquet", schema=SCHEMA)
            self._delta = latest_rows(_as_state(t.to_table(columns=STATE_COLUMNS)))

    # -- lookups -------------------------------------------------------------------------------------------
    def lookup(self, uris: Iterable[str]) -> dict[str, KeyState]:
        """request_key -> latest state, for every key recorded for one of these source URIs."""
        wanted = sorted(set(uris))
        self.stats.lookups += 1
        if not wanted:
            return {}
        values = pa.array(wanted, pa.string())
        parts = []
        if self._base is not None and self._file is not None:
            groups = [g for g, (lo, hi) in enumerate(zip(self._base.mins, self._base.maxs, strict=True))
                      if bisect.bisect_left(wanted, lo) < bisect.bisect_right(wanted, hi)]
            if groups:
                self.stats.groups_read += len(groups)
                uri = self._file.read_row_groups(groups, columns=["source_uri"])["source_uri"]
                hit = pc.is_in(uri, value_set=values)
                if pc.any(hit).as_py():
                    hits = [g for g, n in zip(groups, self._group_hits(groups, hit), strict=True) if n]
                    t = self._file.read_row_groups(hits, columns=STATE_COLUMNS)
                    parts.append(t.filter(pc.is_in(t["source_uri"], value_set=values)))
        if self._delta.num_rows:
            parts.append(self._delta.filter(pc.is_in(self._delta["source_uri"], value_set=values)))
        if not parts:
            return {}
        t = latest_rows(pa.concat_tables(parts))  # the delta comes after the base: it wins a tie
        return {k: KeyState(s, e, src, n) for k, s, e, src, n in zip(
            *(t[c].to_pylist() for c in ("request_key", "status", "error_type", "source_key", "segment_count")),
            strict=True)}

    def _group_hits(self, groups: list[int], hit: pa.ChunkedArray) -> list[int]:
        assert self._file is not None
        counts, at, flags = [], 0, hit.combine_chunks()
        for g in groups:
            n = self._file.metadata.row_group(g).num_rows
            counts.append(pc.sum(flags.slice(at, n)).as_py() or 0)
            at += n
        return counts

    # -- folding -------------------------------------------------------------------------------------------
    def fold(self) -> None:
        """Write a new base from the current base and the delta (latest row per key, sorted by source_uri)."""
        import duckdb

        inputs = ([self._base.path] if self._base else []) + self._delta_files
        if not inputs:
            return
        covered: dict[str, set[str]] = {p: set(n) for p, n in (self._base.covered if self._base else {}).items()}
        for f in self._delta_files:
            part, name = _partition_and_name(f)
            covered.setdefault(part, set()).add(name)
        base_schema = pa.schema([SCHEMA.field(c) for c in STATE_COLUMNS])
        tmpdir = tempfile.mkdtemp(prefix="vidbatch-state-")
        try:
            con = duckdb.connect(config={"memory_limit": DUCKDB_MEMORY, "threads": 2, "temp_directory": tmpdir,
                                         "preserve_insertion_order": False})  # ORDER BY still orders the output
            selects = []
            if on_disk := isinstance(self.fs, LocalFileSystem):  # DuckDB reads local Parquet itself: far less memory
                base_src = f"read_parquet({[self._base.path]!r})" if self._base else None
                delta_src = f"read_parquet({self._delta_files!r}, union_by_name=true)" if self._delta_files else None
            else:  # any other filesystem: through pyarrow datasets, streamed
                base_src = "base_rows" if self._base else None
                delta_src = "delta_rows" if self._delta_files else None
                if self._base:
                    con.register("base_rows", ds.dataset(inputs[:1], filesystem=self.fs, format="parquet",
                                                         schema=base_schema))
                if self._delta_files:
                    con.register("delta_rows", ds.dataset(self._delta_files, filesystem=self.fs, format="parquet",
                                                          schema=SCHEMA))
            if base_src:
                selects.append(f"SELECT {', '.join(STATE_COLUMNS)}, 0 AS tier FROM {base_src}")
            if delta_src:
                old = on_disk and not self._any_has(["source_key", "segment_count"])
                key, count = ("request_key", "1") if old else ("coalesce(source_key, request_key)",
                                                               "coalesce(segment_count, 1)")
                selects.append(f"SELECT source_uri, request_key, {key} AS source_key, status, error_type, "
                               f"({count})::INTEGER AS segment_count, created_at, 1 AS tier FROM {delta_src}")
            # an external sort (DuckDB spills it to disk under its memory limit): every key's rows end up adjacent,
            # oldest first, so the latest of each is the last of its run, kept as the batches stream past
            query = (f"SELECT {', '.join(STATE_COLUMNS)} FROM ({' UNION ALL '.join(selects)}) "
                     "ORDER BY source_uri, request_key, created_at, tier")
            reader = con.sql(query).to_arrow_reader(ROW_GROUP)
            name = f"base-{now_utc():%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
            local = os.path.join(tmpdir, "base.parquet")
            with pq.ParquetWriter(local, base_schema, compression="zstd") as writer:
                pending: list[pa.Table] = []
                for t in _last_of_each_key(pa.Table.from_batches([b]).cast(base_schema) for b in reader):
                    pending.append(t)  # written in whole row groups of ROW_GROUP rows
                    if sum(p.num_rows for p in pending) >= ROW_GROUP:
                        whole = pa.concat_tables(pending)
                        writer.write_table(whole.slice(0, ROW_GROUP), row_group_size=ROW_GROUP)
                        pending = [whole.slice(ROW_GROUP)]
                if pending and sum(p.num_rows for p in pending):
                    writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP)
            con.close()
            target = f"{self.root}/{LATEST}/{name}{BASE_SUFFIX}"
            self.fs.makedirs(f"{self.root}/{LATEST}", exist_ok=True)
            self.fs.put_file(local, target)  # a base no manifest names is never read: no partial state is seen
            body = {"base": f"{name}{BASE_SUFFIX}", "covered": {p: sorted(n) for p, n in sorted(covered.items())},
                    "written_at": now_utc().isoformat()}
            put_atomic(self.fs, f"{self.root}/{LATEST}/{name}.json", json.dumps(body).encode())
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        self._prune()
        self.refresh()
        self.load_delta()
        self.stats.folded = True

    def _any_has(self, names: list[str]) -> bool:
        """Whether some delta file has these columns (files of the ledger's first version have neither; DuckDB's
        union_by_name makes them null where a file lacks them, but cannot name a column no file has)."""
        return any(set(names) <= set(pq.read_schema(f).names) for f in self._delta_files)

    def _prune(self) -> None:
        """Remove the bases (and manifests) older than the newest KEEP_BASES."""
        manifests = self._manifests()
        for m in manifests[:-KEEP_BASES]:
            stem = m[: -len(".json")]
            for p in (m, f"{stem}{BASE_SUFFIX}"):
                try:
                    self.fs.rm_file(p)
                except FileNotFoundError:
                    pass


class RunState:
    """What a run skips, looked up a batch of listed objects at a time: `done` grows with each lookup."""

    def __init__(self, store: StateStore | None, key_of, retry_failed: bool = False, all_errors: bool = False,
                 force: bool = False):
        self.store, self.key_of = store, key_of
        self.retry_failed, self.all_errors, self.force = retry_failed, all_errors, force
        self.done: set[str] = set()  # request_keys (segments) finished by earlier runs, among those looked up

    def finished_sources(self, objs: list) -> set[str]:
        """The whole-object keys of these listed objects all of whose segments are finished."""
        if self.force or self.store is None or not objs:
            return set()
        mine = {self.key_of(o) for o in objs}
        state = {k: st for k, st in self.store.lookup(o.uri for o in objs).items() if st.source_key in mine}
        finished = finished_keys(state, self.retry_failed, self.all_errors, self.force)
        self.done |= finished
        return finished_sources(state, finished)
