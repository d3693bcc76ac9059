"""How a source is listed: by its declared layout, by what its globs allow, or flat on object stores.

Every listing request goes through one `Lister`, which counts them (`calls`): a directory listing on a local
disk or an object store's delimiter listing is one call; a flat object-store listing is one call per page of
up to 1,000 keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from tasks.config.layout import Layout
from tasks.discover.globs import glob_regex

PAGE_KEYS = 1000  # keys per flat listing request (S3's maximum)
Entry = tuple[str, dict]  # (path as the filesystem names it, its info)
Unfit = Callable[[str, str], None]  # (relative path, "file" | "directory") that does not fit the layout


def _is_s3(fs: AbstractFileSystem) -> bool:
    return "s3" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)) and hasattr(fs, "call_s3")


class Lister:
    """Listing requests to one filesystem, counted."""

    def __init__(self, fs: AbstractFileSystem):
        self.fs, self.calls = fs, 0

    @property
    def object_store(self) -> bool:
        return not isinstance(self.fs, LocalFileSystem)

    def ls(self, path: str) -> list[dict]:
        """One directory's entries (files and directories); [] when it does not exist."""
        self.calls += 1
        try:
            return list(self.fs.ls(path, detail=True, refresh=True) if self.object_store else
                        self.fs.ls(path, detail=True))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def flat(self, path: str) -> Iterator[Entry]:
        """Every object below `path`, at any depth, in key order, a page at a time (no delimiter walk)."""
        if _is_s3(self.fs):
            yield from self._s3_pages(path)
            return
        if self.object_store:
            self.calls += 1
            try:
                found = self.fs.find(path, detail=True, withdirs=False)
            except FileNotFoundError:
                return
            for name in sorted(found):
                yield name, found[name]
            return
        yield from self.tree(path)

    def tree(self, path: str, descend: Callable[[str], bool] = lambda p: True) -> Iterator[Entry]:
        """Files below `path` directory by directory (sorted), into the subdirectories `descend` allows."""
        entries = sorted(self.ls(path), key=lambda e: e["name"])
        dirs = []
        for e in entries:
            if e.get("type") == "directory":
                dirs.append(e["name"])
            elif e.get("type", "file") == "file":
                yield e["name"], e
        for d in dirs:
            if d.rstrip("/") != path.rstrip("/") and descend(d):
                yield from self.tree(d, descend)

    def _s3_pages(self, path: str) -> Iterator[Entry]:
        bucket, key, _ = self.fs.split_path(path)
        prefix = key.rstrip("/") + "/" if key else ""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": PAGE_KEYS}
            if token:
                kwargs["ContinuationToken"] = token
            self.calls += 1
            page = self.fs.call_s3("list_objects_v2", **kwargs)
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):
                    continue  # a directory marker, not an object
                yield f"{bucket}/{obj['Key']}", {"name": f"{bucket}/{obj['Key']}", "size": obj.get("Size", 0),
                                                 "type": "file", "ETag": obj.get("ETag"),
                                                 "LastModified": obj.get("LastModified")}
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return


def _rel(path: str, base: str) -> str:
    return path[len(base):].lstrip("/") if path.startswith(base) else path.rsplit("/", 1)[-1]


def literal_prefix(patterns: list[str]) -> str:
    """The directory path every include glob starts with ('' when any can match anywhere)."""
    if not patterns or any("/" not in p for p in patterns):
        return ""
    heads = []
    for p in patterns:
        parts = p.split("/")[:-1]  # the last segment names files
        lit = []
        for part in parts:
            if any(c in part for c in "*?["):
                break
            lit.append(part)
        heads.append(lit)
    common = []
    for seg in zip(*heads, strict=False):
        if len(set(seg)) != 1:
            break
        common.append(seg[0])
    return "/".join(common)


def prunable_below_wildcard(patterns: list[str]) -> bool:
    """True when some include glob has a literal directory after a wildcard one (`*/2026/**`): a walk can skip
    the directories between, which a flat listing cannot."""
    for p in patterns:
        parts = p.split("/")[:-1]
        wild = False
        for part in parts:
            if part == "**":
                break
            if any(c in part for c in "*?["):
                wild = True
            elif wild:
                return True
    return False


def could_hold(rel_dir: str, patterns: list[str]) -> bool:
    """Whether a directory (relative path) can hold an object that some include glob matches."""
    if not patterns:
        return True
    segs = rel_dir.strip("/").split("/")
    for p in patterns:
        if "/" not in p:
            return True  # a file-name glob matches at any depth
        parts = p.split("/")
        parts = parts if "**" in parts[-1] else parts[:-1]  # a last `**` (`cam02/**`) matches files at any depth
        ok = True
        for i, seg in enumerate(segs):
            if i >= len(parts):
                ok = False  # deeper than the glob's directories: it names files one level up
                break
            if "**" in parts[i]:
                break       # any depth from here on
            if not glob_regex(parts[i]).match(seg):
                ok = False
                break
        if ok:
            return True
    return False


def _start(prefix: str, literal: str) -> str:
    """Where a listing starts below the root: the deeper of a run's prefix and the include globs' literal prefix
    (the prefix when they part ways: the globs then match nothing below it)."""
    prefix, literal = prefix.strip("/"), literal.strip("/")
    return literal if not prefix or (literal + "/").startswith(prefix + "/") else prefix


def walk_plain(lister: Lister, root: str, include: list[str], prefix: str = "") -> Iterator[Entry]:
    """Without a layout: a flat listing on object stores (of the includes' literal prefix, or the run's prefix when
    deeper), else a walk that never enters a directory no include glob can match."""
    start = f"{root}/{below}" if (below := _start(prefix, literal_prefix(include))) else root
    if lister.object_store and not prunable_below_wildcard(include):
        yield from lister.flat(start)
        return
    yield from lister.tree(start, lambda d: could_hold(_rel(d, root), include))


def layout_window(since: datetime | None, until: datetime | None, lag_days: int,
                  now: datetime | None = None) -> tuple[datetime, datetime] | None:
    """The span of directory dates a time window lists: `lag_days` before its start (late uploads) to its end."""
    if since is None:
        return None  # no start: every date
    end = until or (now or datetime.now(UTC)) + timedelta(days=1)
    return since - timedelta(days=lag_days), end


def walk_layout(lister: Lister, root: str, layout: Layout, span: tuple[datetime, datetime] | None,
                unfit: Unfit, prefix: str = "") -> Iterator[Entry]:
    """The objects below the layout's leaf directories; with a date span, only the leaves of its dates, named
    directly rather than listed; with a prefix (a backfill shard's camera), only the directories below it."""
    values = layout.date_values(*span) if span is not None and layout.finest is not None else None
    fixed = tuple(p for p in prefix.strip("/").split("/") if p)
    yield from _descend(lister, root, root, layout, 0, (), values, unfit, fixed)


def _descend(lister: Lister, root: str, path: str, layout: Layout, level: int, dated: tuple[str, ...],
             values: list[tuple[str, ...]] | None, unfit: Unfit, fixed: tuple[str, ...] = ()) -> Iterator[Entry]:
    if level == layout.depth:
        yield from lister.flat("/".join((path, *fixed)))
        return
    seg = layout.segments[level]
    if fixed:  # the prefix names this level's directory: not listed
        name = fixed[0]
        nxt = (*dated, name) if seg.kind == "date" else dated
        if seg.fits(name) and (seg.kind != "date" or values is None or any(v[:len(nxt)] == nxt for v in values)):
            yield from _descend(lister, root, f"{path}/{name}", layout, level + 1, nxt, values, unfit, fixed[1:])
        return
    if seg.kind == "literal":
        yield from _descend(lister, root, f"{path}/{seg.text}", layout, level + 1, dated, values, unfit)
        return
    if seg.kind == "date" and values is not None:
        n = len(dated)
        for name in dict.fromkeys(v[n] for v in values if v[:n] == dated):
            yield from _descend(lister, root, f"{path}/{name}", layout, level + 1, (*dated, name), values, unfit)
        return
    entries = sorted(lister.ls(path), key=lambda e: e["name"])
    for e in entries:
        name = e["name"].rstrip("/")
        if name == path.rstrip("/"):
            continue
        leaf = name.rsplit("/", 1)[-1]
        if e.get("type") != "directory":
            unfit(_rel(name, root), "file")
        elif not seg.fits(leaf):
            unfit(_rel(name, root) + "/", "directory")
        else:
            nxt = (*dated, leaf) if seg.kind == "date" else dated
            yield from _descend(lister, root, name, layout, level + 1, nxt, values, unfit)


def misfit_sample(lister: Lister, root: str, layout: Layout, look: int = 50, prefix: str = "") -> str | None:
    """When a layout found nothing: the first of the source's objects (up to `look` of them, below `prefix`) if none
    of them fits the layout (the layout is wrong), else None (the window was empty)."""
    first = None
    for n, (path, _) in enumerate(lister.flat(f"{root}/{prefix.strip('/')}" if prefix.strip("/") else root)):
        rel = _rel(path, root)
        if layout.fits(rel):
            return None
        first = first or rel
        if n + 1 >= look:
            break
    return first
