"""List videos under any fsspec URL, one directory at a time, with globs, extensions and a time window."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

import fsspec
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from tasks.config.run import SourceConfig
from tasks.errors import SourceError


@dataclass(frozen=True)
class SourceObject:
    """One listed object: where it is and what identifies its content."""

    uri: str
    path: str
    rel: str
    size: int
    etag: str | None
    mtime: datetime | None

    @property
    def ext(self) -> str:
        name = self.path.rsplit("/", 1)[-1]
        return name.rsplit(".", 1)[-1].lower() if "." in name else ""


@dataclass
class DiscoverStats:
    listed: int = 0
    selected: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: {"extension": 0, "empty": 0, "filtered": 0,
                                                              "time_window": 0})


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern:
    """Translate a glob (`**` any depth, `*` and `?` within one path segment, `[..]` sets) to a regex."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
                i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matches(rel: str, patterns: list[str]) -> bool:
    """True when the relative path, or its file name for a pattern with no slash, matches a glob."""
    name = rel.rsplit("/", 1)[-1]
    return any(glob_regex(p).match(rel if "/" in p else name) for p in patterns)


def _mtime(info: dict) -> datetime | None:
    for key in ("LastModified", "mtime", "updated", "last_modified", "modified", "created"):
        v = info.get(key)
        if v is None:
            continue
        if isinstance(v, datetime):
            return v if v.tzinfo else v.replace(tzinfo=UTC)
        if isinstance(v, (int, float)):
            return datetime.fromtimestamp(float(v), tz=UTC)
        if isinstance(v, str):
            try:
                d = datetime.fromisoformat(v.replace("Z", "+00:00"))
                return d if d.tzinfo else d.replace(tzinfo=UTC)
            except ValueError:
                continue
    return None


def _etag(info: dict) -> str | None:
    for key in ("ETag", "etag", "md5Hash", "md5"):
        if info.get(key):
            return str(info[key]).strip('"')
    return None


def open_source(source: SourceConfig) -> tuple[AbstractFileSystem, str]:
    """The filesystem and root path of the source URL."""
    try:
        fs, root = fsspec.core.url_to_fs(source.url, **source.storage_options)
    except (ImportError, ValueError) as e:
        raise SourceError(f"source.url {source.url!r}: cannot open this storage: {e}") from None
    return fs, root.rstrip("/")


def iter_objects(fs: AbstractFileSystem, root: str, source: SourceConfig,
                 since: datetime | None = None, until: datetime | None = None,
                 stats: DiscoverStats | None = None, skip_prefix: str | None = None,
                 empty: list[SourceObject] | None = None) -> Iterator[SourceObject]:
    """Yield the selected video objects under root, directory by directory, in sorted order.

    `skip_prefix` (a URI prefix) hides vidbatch's own scratch copies when they live under the source; zero-byte
    videos are counted as skipped and, with `empty`, appended to it (the run gives each a ledger row).
    """
    stats = stats if stats is not None else DiscoverStats()
    exts = set(source.extensions)
    fs.invalidate_cache()  # fsspec instances are cached per process: a nightly worker must see tonight's objects
    try:
        if not fs.exists(root):
            local = isinstance(fs, LocalFileSystem)
            if local or not fs.exists(root.split("/", 1)[0]):
                raise FileNotFoundError(root)
            return  # an empty prefix in an existing bucket: nothing new tonight
        if fs.isfile(root):
            walker: Iterable[tuple[str, list[str], dict[str, dict]]] = [
                (root.rsplit("/", 1)[0], [], {root.rsplit("/", 1)[-1]: fs.info(root)})]
            base = root.rsplit("/", 1)[0]
        else:
            walker = fs.walk(root, detail=True)
            base = root
    except FileNotFoundError:
        raise SourceError(f"source.url {source.url!r}: no such directory or bucket") from None
    except Exception as e:  # noqa: BLE001 - a listing failure is reported with the source URL, any backend
        raise SourceError(f"source.url {source.url!r}: listing failed: {type(e).__name__}: {e}") from None
    try:
        for dirpath, _dirs, files in walker:
            for name in sorted(files):
                info = files[name]
                if info.get("type", "file") != "file":
                    continue
                path = info.get("name") or f"{dirpath}/{name}"
                rel = path[len(base):].lstrip("/") if path.startswith(base) else name
                stats.listed += 1
                obj = SourceObject(uri=fs.unstrip_protocol(path), path=path, rel=rel, size=int(info.get("size") or 0),
                                   etag=_etag(info), mtime=_mtime(info))
                reason = "filtered" if skip_prefix and obj.uri.startswith(skip_prefix) else \
                    _skip_reason(obj, source, exts, since, until)
                if reason:
                    stats.skipped[reason] += 1
                    if reason == "empty" and empty is not None:
                        empty.append(obj)
                    continue
                stats.selected += 1
                yield obj
    except Exception as e:  # noqa: BLE001 - any backend's failure mid-walk is reported with the source URL
        if isinstance(e, SourceError):
            raise
        raise SourceError(f"source.url {source.url!r}: listing failed: {type(e).__name__}: {e}") from None


def _skip_reason(obj: SourceObject, source: SourceConfig, exts: set[str], since, until) -> str | None:
    if obj.ext not in exts:
        return "extension"
    if source.include and not matches(obj.rel, source.include):
        return "filtered"
    if source.exclude and matches(obj.rel, source.exclude):
        return "filtered"
    if obj.size == 0:
        return "empty"
    if (since or until) and obj.mtime is not None:
        if (since and obj.mtime < since) or (until and obj.mtime >= until):
            return "time_window"
    return None
