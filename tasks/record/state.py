"""Run state without the whole history in memory: the latest row per request_key, looked up by source URI.

The ledger's store (tasks/record/latest.py) lives in `<ledger>/_state/latest/`: a base sorted by `source_uri`
and the delta of ledger files it does not cover. A run looks up each chunk of the objects it lists, never the
whole ledger. Files of the ledger's first version lack source_key and segment_count: they read as the key
itself and one segment.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from itertools import islice

from tasks.discover.listing import SourceObject
from tasks.record.latest import LATEST, LOOKUP_CHUNK, LatestStore, StoreSpec
from tasks.record.ledger import SCHEMA, KeyState, finished_keys, finished_sources

__all__ = ["LATEST", "LEDGER_STATE", "IndexStateStore", "Listed", "RunState", "StateStore"]

LEDGER_STATE = StoreSpec(
    SCHEMA, ("source_uri", "request_key", "source_key", "status", "error_type", "segment_count", "segment_index",
             "stage", "created_at"),
    by="source_uri", fallbacks={"source_key": "request_key", "segment_count": 1},
    optional=("segment_index", "stage"))  # the index's columns: a base of the previous version lacks them


class StateStore(LatestStore):
    """The latest state of the ledger's request_keys, looked up for a batch of listed source URIs."""

    spec = LEDGER_STATE

    def lookup(self, uris: Iterable[str]) -> dict[str, KeyState]:
        """request_key -> latest state, for every key recorded for one of these source URIs."""
        t = self.rows(uris)
        return {k: KeyState(s, e, src, n) for k, s, e, src, n in zip(
            *(t[c].to_pylist() for c in ("request_key", "status", "error_type", "source_key", "segment_count")),
            strict=True)}


class IndexStateStore(StateStore):
    """The ledger's store as the index reads it: a base without segment_index and stage (the previous version's)
    is rebuilt, not read with them null (a run of summarize reads it as it is, until its next fold writes them)."""

    spec = replace(LEDGER_STATE, optional=())


class Listed:
    """The URIs a run looked up, in a local temporary file rather than memory, read back by a step after the last
    batch (the index's entries)."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile("w+", encoding="utf-8")
        self.count = 0

    def add(self, uris: Iterable[str]) -> None:
        for uri in uris:
            self._file.write(json.dumps(uri) + "\n")  # JSON: an object key may hold a newline
            self.count += 1

    def chunks(self, size: int = LOOKUP_CHUNK) -> Iterator[list[str]]:
        self._file.flush()
        self._file.seek(0)
        uris = (json.loads(line) for line in self._file)
        while chunk := list(islice(uris, size)):
            yield chunk

    def close(self) -> None:
        self._file.close()


class RunState:
    """What a run skips, looked up a chunk of listed objects at a time: `done` grows with each lookup."""

    def __init__(self, store: StateStore | None, retry_failed: bool = False, all_errors: bool = False,
                 force: bool = False, listed: Listed | None = None):
        self.store, self.listed = store, listed
        self.retry_failed, self.all_errors, self.force = retry_failed, all_errors, force
        self.done: set[str] = set()  # request_keys (segments) finished by earlier runs, among those looked up

    def finished(self, keyed: Mapping[str, SourceObject]) -> set[str]:
        """Of these listed objects (by their whole-object request_key), the keys all of whose segments are
        finished."""
        if self.listed is not None:
            self.listed.add(o.uri for o in keyed.values())
        if self.force or self.store is None or not keyed:
            return set()
        state = {k: st for k, st in self.store.lookup(o.uri for o in keyed.values()).items()
                 if st.source_key in keyed}
        finished = finished_keys(state, self.retry_failed, self.all_errors, self.force)
        self.done |= finished
        return finished_sources(state, finished)
