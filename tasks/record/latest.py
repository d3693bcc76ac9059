"""The latest row of each key of an append-only Parquet table, looked up by one column, never read whole.

A store is the table itself plus a derived, rebuildable index beside it, `<table>/_state/latest/`:

- a **base**: one Parquet file holding the latest row of every key of the table files it covers (the spec's
  columns only), sorted by the lookup column in row groups of 8,192 rows, so that the row-group statistics
  (its min/max) find the few groups that can hold a looked-up value;
- a **manifest** (`<stamp>-<id>.json`, written last and atomically) naming the base and the table files
  (per date partition) it covers.

Everything the manifest does not cover (files written since, journal recoveries, compacted or merged
partitions, a second run's files, a table written before the store existed) is the **delta**, read whole at
open: its latest rows win over the base's. A fold (when the delta passes `FOLD_ROWS`, or by `compact`) writes
a new base from base + delta with DuckDB under a memory limit and streams it out with pyarrow. Any number of
runs may open, read and fold at once: a base is only ever read through its own manifest, so a reader sees a
base and exactly the files it covers, or an older one and more delta; either gives the same answer. A base
written by an older vidbatch may lack columns added since: those the spec calls optional read as null (the
next fold writes them), and a base lacking any other is passed over (the store is rebuilt).
Deleting the store loses nothing: the next open rebuilds it from the table (that is also the migration of an
existing table, once, atomically).

The ledger's run state (tasks/record/state.py), the index entries (tasks/index/entries.py) and the generations
table (tasks/generate/table.py) are such stores, each a `StoreSpec`.
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from tasks.config.run import OutputConfig
from tasks.record.journal import STATE
from tasks.record.tables import dataset, latest_rows, now_utc, open_output, put_atomic

LATEST = f"{STATE}/latest"
FOLD_ROWS = 250_000       # delta rows past which the next open folds them into a new base
ROW_GROUP = 8_192
LOOKUP_CHUNK = 2_000      # values per lookup when a caller has many (each lookup reads the groups that can hold them)
BASE_SUFFIX = ".pq"       # a Parquet file, named so that a `table/**/*.parquet` glob (DuckDB's) never reads it as rows
KEEP_BASES = 2            # the newest bases kept (a reader may still be on the one before)
DUCKDB_MEMORY = "256MB"


@dataclass(frozen=True)
class StoreSpec:
    """What a store keeps of a table, and what "latest" means there.

    Every row of one key must have the same `by` value (the ledger's request_key hashes its source URI), so that
    sorting by (`by`, `key`) puts a key's rows side by side."""

    schema: pa.Schema                      # the table's; files of older versions read their missing columns as null
    columns: tuple[str, ...]               # the base's columns (`by`, `key` and `order` among them)
    by: str                                # the lookup column: the base is sorted by it
    key: str = "request_key"               # one row per key ...
    order: tuple[str, ...] = ("created_at",)  # ... the last by these (ties: the last written)
    fallbacks: Mapping[str, str | int] = field(default_factory=dict)  # column -> the column or constant a null reads as
    optional: tuple[str, ...] = ()         # columns an older base may lack (read as null); lacking another: rebuilt

    @property
    def base_schema(self) -> pa.Schema:
        return pa.schema([self.schema.field(c) for c in self.columns])

    def normalized(self, table: pa.Table) -> pa.Table:
        """The spec's columns of table rows, those it lacks null, nulls of older files filled by their fallbacks."""
        cols = {}
        for c in self.columns:
            kind = self.schema.field(c).type
            col = table[c] if c in table.column_names else pa.nulls(table.num_rows, kind)
            fb = self.fallbacks.get(c)
            cols[c] = col if fb is None else pc.coalesce(col, table[fb] if isinstance(fb, str) else pa.scalar(fb, kind))
        return pa.table(cols).cast(self.base_schema)

    def select_sql(self, source: str, present: set[str]) -> str:
        """The same as a DuckDB SELECT over `source`, whose files have the columns `present` (DuckDB's
        union_by_name makes a column null where a file lacks it, but cannot name a column no file has)."""
        exprs = []
        for c in self.columns:
            fb = self.fallbacks.get(c)
            if c in present:
                exprs.append(c if fb is None else f"coalesce({c}, {fb})")
            else:
                exprs.append("NULL" if fb is None else str(fb))
        return f"SELECT {', '.join(f'{e} AS {c}' for e, c in zip(exprs, self.columns, strict=True))}, 1 AS tier " \
               f"FROM {source}"


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
    covered: dict[str, set[str]]   # partition dir name -> table file names
    columns: list[str] = field(default_factory=list)  # the spec's columns it has (an older base: not all)
    mins: list[str] = field(default_factory=list)
    maxs: list[str] = field(default_factory=list)
    rows: int = 0


def _partition_and_name(path: str) -> tuple[str, str]:
    parts = path.rstrip("/").split("/")
    return parts[-2], parts[-1]


def _last_of_each_key(tables: Iterable[pa.Table], key: str) -> Iterator[pa.Table]:
    """From tables sorted so that a key's rows are adjacent (across table boundaries too), each key's last row."""
    carry: pa.Table | None = None
    for t in tables:
        if t.num_rows == 0:
            continue
        t = pa.concat_tables([carry, t]) if carry is not None else t
        keys = t[key]
        n = t.num_rows
        if n > 1:
            keep = pc.not_equal(keys.slice(0, n - 1), keys.slice(1))
            yield t.slice(0, n - 1).filter(keep)
        carry = t.slice(n - 1)  # its run may go on in the next table
    if carry is not None:
        yield carry


class LatestStore:
    """The latest rows of a table's keys, looked up by the spec's `by` column a batch of values at a time."""

    spec: ClassVar[StoreSpec]

    def __init__(self, output: OutputConfig, fold_rows: int = FOLD_ROWS):
        self.output, self.fold_rows = output, fold_rows
        self.fs, self.root = open_output(output)
        self.stats = StoreStats()
        self._base: _Base | None = None
        self._delta = self.spec.normalized(self.spec.schema.empty_table())
        self._file: pq.ParquetFile | None = None
        self._delta_files: list[str] = []

    # -- opening -------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, output: OutputConfig, fold_rows: int = FOLD_ROWS):
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
            names = meta.schema.to_arrow_schema().names
            if not set(self.spec.columns) - set(self.spec.optional) <= set(names):
                continue  # an older vidbatch's base, without a column this one needs: rebuilt from the table
            base = _Base(path, {p: set(n) for p, n in body["covered"].items()},
                         [c for c in self.spec.columns if c in names], rows=meta.num_rows)
            col = names.index(self.spec.by)
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

    def refresh(self, with_base: bool = True) -> None:
        """Read the newest base's manifest and find the table files it does not cover (the delta), counting their
        rows from the Parquet footers only."""
        self._base = self._read_base() if with_base else None
        self._file = pq.ParquetFile(self.fs.open(self._base.path, "rb")) if self._base else None
        data = dataset(self.output, self.spec.schema)
        files = list(data.files) if data is not None else []
        covered = self._base.covered if self._base else {}
        self._delta_files = [f for f in files
                             if _partition_and_name(f)[1] not in covered.get(_partition_and_name(f)[0], set())]
        rows = ds.dataset(self._delta_files, filesystem=self.fs, format="parquet").count_rows() \
            if self._delta_files else 0
        self._delta = self.spec.normalized(self.spec.schema.empty_table())
        self.stats = StoreStats(base_rows=self._base.rows if self._base else 0,
                                base_groups=len(self._base.mins) if self._base else 0,
                                delta_files=len(self._delta_files), delta_rows=rows)

    def load_delta(self) -> None:
        """The delta's latest rows, in memory (it is at most about FOLD_ROWS rows: a larger one is folded first)."""
        if self._delta_files:
            t = ds.dataset(self._delta_files, filesystem=self.fs, format="parquet", schema=self.spec.schema)
            self._delta = self._latest(self.spec.normalized(t.to_table(columns=list(self.spec.columns))))

    def _latest(self, table: pa.Table) -> pa.Table:
        return latest_rows(table, self.spec.key, self.spec.order)

    # -- lookups -------------------------------------------------------------------------------------------
    def rows(self, values: Iterable[str]) -> pa.Table:
        """The latest row of every key whose `by` column holds one of these values (the spec's columns)."""
        wanted = sorted(set(values))
        self.stats.lookups += 1
        by = self.spec.by
        if not wanted:
            return self._delta.slice(0, 0)
        value_set = pa.array(wanted, pa.string())
        parts = []
        if self._base is not None and self._file is not None:
            for g, (lo, hi) in enumerate(zip(self._base.mins, self._base.maxs, strict=True)):
                if bisect.bisect_left(wanted, lo) >= bisect.bisect_right(wanted, hi):
                    continue  # its statistics say no wanted value is in it
                self.stats.groups_read += 1  # one group at a time: memory holds one group, whatever the base
                hit = pc.is_in(self._file.read_row_group(g, columns=[by])[by], value_set=value_set)
                if pc.any(hit).as_py():
                    t = self._file.read_row_group(g, columns=self._base.columns).filter(hit)
                    parts.append(self.spec.normalized(t))
        if self._delta.num_rows:
            parts.append(self._delta.filter(pc.is_in(self._delta[by], value_set=value_set)))
        if not parts:
            return self._delta.slice(0, 0)
        return self._latest(pa.concat_tables(parts))  # the delta comes after the base: it wins a tie

    # -- folding -------------------------------------------------------------------------------------------
    def fold(self) -> None:
        """Write a new base from the current base and the delta (latest row per key, sorted by `by`)."""
        import duckdb

        spec = self.spec
        if self._base is not None and self._base.columns != list(spec.columns):
            self.refresh(with_base=False)  # an older base's missing columns are unknown, not null: from the table
        inputs = ([self._base.path] if self._base else []) + self._delta_files
        if not inputs:
            return
        covered: dict[str, set[str]] = {p: set(n) for p, n in (self._base.covered if self._base else {}).items()}
        for f in self._delta_files:
            part, name = _partition_and_name(f)
            covered.setdefault(part, set()).add(name)
        base_schema = spec.base_schema
        columns = ", ".join(spec.columns)
        tmpdir = tempfile.mkdtemp(prefix="vidbatch-state-")
        try:
            con = duckdb.connect(config={"memory_limit": DUCKDB_MEMORY, "threads": 2, "temp_directory": tmpdir,
                                         "preserve_insertion_order": False})  # ORDER BY still orders the output
            selects = []
            present = set(spec.columns)
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
                                                          schema=spec.schema))
            if base_src:
                selects.append(f"SELECT {columns}, 0 AS tier FROM {base_src}")
            if delta_src:
                if on_disk:
                    present = self._present_columns()
                selects.append(spec.select_sql(delta_src, present))
            # an external sort (DuckDB spills it to disk under its memory limit): every key's rows end up adjacent,
            # oldest first, so the latest of each is the last of its run, kept as the batches stream past
            query = (f"SELECT {columns} FROM ({' UNION ALL '.join(selects)}) "
                     f"ORDER BY {', '.join((spec.by, spec.key, *spec.order))}, tier")
            reader = con.sql(query).to_arrow_reader(ROW_GROUP)
            name = f"base-{now_utc():%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
            local = os.path.join(tmpdir, "base.parquet")
            with pq.ParquetWriter(local, base_schema, compression="zstd") as writer:
                pending: list[pa.Table] = []
                for t in _last_of_each_key((pa.Table.from_batches([b]).cast(base_schema) for b in reader), spec.key):
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

    def _present_columns(self) -> set[str]:
        """The spec's columns that some delta file has (files of a table's first version lack newer ones)."""
        want, found = set(self.spec.columns), set()
        for f in self._delta_files:
            found |= want & set(pq.read_schema(f).names)
            if found == want:
                break
        return found

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
