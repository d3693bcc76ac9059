"""List videos under any fsspec URL with globs, extensions, a time window and an optional declared layout."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import fsspec
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from tasks.config.layout import parse_layout
from tasks.config.run import SourceConfig
from tasks.discover.globs import glob_regex, matches
from tasks.discover.walk import Lister, layout_window, misfit_sample, walk_layout, walk_plain
from tasks.errors import ConfigError, SourceError

__all__ = ["DiscoverStats", "SourceObject", "glob_regex", "iter_objects", "matches", "open_source"]


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
    list_calls: int = 0                 # listing requests made (a flat object-store listing: one per 1,000 keys)
    unfit_sample: str | None = None     # one path that does not fit source.layout

    def unfit(self, rel: str, kind: str) -> None:
        """An object (or a whole directory) whose path does not fit the layout: counted, one sample kept."""
        self.skipped["layout"] = self.skipped.get("layout", 0) + 1
        if self.unfit_sample is None:
            self.unfit_sample = rel


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
                 empty: list[SourceObject] | None = None, prefix: str = "") -> Iterator[SourceObject]:
    """Yield the selected video objects under root (below `prefix` only, when given) in a stable order, listing only
    what can hold them.

    With `source.layout`, only the layout's leaf directories of the window's dates are listed (objects elsewhere
    are counted as `layout` skips); without one, a flat listing on object stores or a walk pruned by the include
    globs. `skip_prefix` (a URI prefix) hides vidbatch's own scratch copies when they live under the source;
    zero-byte videos are counted as skipped and, with `empty`, appended to it (the run gives each a ledger row).
    Paths stay relative to root under a prefix: the include globs and the layout read them as without one.
    """
    stats = stats if stats is not None else DiscoverStats()
    exts = set(source.extensions)
    lister = Lister(fs)
    fs.invalidate_cache()  # fsspec instances are cached per process: a nightly worker must see tonight's objects
    layout = parse_layout(source.layout) if source.layout else None
    if layout is not None and not layout.fits_prefix(prefix):
        raise ConfigError(f"prefix {prefix!r} does not fit source.layout {layout.template!r}: give directories of "
                          "its leading segments (a camera, say); the window picks the date directories")
    try:
        if not fs.exists(root):
            local = isinstance(fs, LocalFileSystem)
            if local or not fs.exists(root.split("/", 1)[0]):
                raise FileNotFoundError(root)
            return  # an empty prefix in an existing bucket: nothing new tonight
        if fs.isfile(root):
            entries: Iterable[tuple[str, dict]] = [(root, fs.info(root))]
            base = root.rsplit("/", 1)[0]
        elif layout is not None:
            stats.skipped.setdefault("layout", 0)
            entries = walk_layout(lister, root, layout, layout_window(since, until, source.layout_lag_days),
                                  lambda rel, kind: stats.unfit(rel, kind), prefix)
            base = root
        else:
            entries = walk_plain(lister, root, source.include, prefix)
            base = root
    except FileNotFoundError:
        raise SourceError(f"source.url {source.url!r}: no such directory or bucket") from None
    except Exception as e:  # noqa: BLE001 - a listing failure is reported with the source URL, any backend
        raise SourceError(f"source.url {source.url!r}: listing failed: {type(e).__name__}: {e}") from None
    fitting = 0
    try:
        for path, info in entries:
            if info.get("type", "file") != "file":
                continue
            rel = path[len(base):].lstrip("/") if path.startswith(base) else path.rsplit("/", 1)[-1]
            stats.listed += 1
            fitting += 1
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
        if layout is not None and not fitting:
            sample = misfit_sample(lister, root, layout, prefix=prefix)
            if sample is not None:
                raise SourceError(f"source.layout {layout.template!r} matches nothing under {source.url!r}: "
                                  f"{sample!r} does not fit it")
    except Exception as e:  # noqa: BLE001 - any backend's failure mid-walk is reported with the source URL
        if isinstance(e, SourceError):
            raise
        raise SourceError(f"source.url {source.url!r}: listing failed: {type(e).__name__}: {e}") from None
    finally:
        stats.list_calls += lister.calls


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
