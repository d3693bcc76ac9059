"""Prepare: what a request carries for one planned item: the object itself, or a cut, transcoded or shrunk copy."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import fsspec
from fsspec import AbstractFileSystem

from tasks.config.run import RunConfig
from tasks.dialects.base import VideoRef
from tasks.errors import ConfigError, LimitError, SourceError
from tasks.plan.items import WorkItem
from tasks.prepare.delivery import OBJECT_STORE_PROTOCOLS, local_ref, video_ref


@dataclass
class Prepared:
    """A video ready to go in a request, and how to clean up after its row is recorded."""

    ref: VideoRef
    size: int
    ops: str | None = None
    cleanup: Callable[[], None] = field(default=lambda: None)


class Scratch:
    """A local temporary directory for cut files, and the storage prefix URL deliveries upload them to."""

    def __init__(self, cfg: RunConfig, run_id: str | None = None,
                 sweep: Callable[[AbstractFileSystem, str], list[str]] | None = None):
        sweep_dead_scratch()
        self.local = tempfile.mkdtemp(prefix=f"vidbatch-{os.getpid()}-")
        url, options = cfg.scratch()
        self.url = url.rstrip("/")
        self.run_dir = run_id or uuid.uuid4().hex  # the run's uploads go under <scratch>/<run_id>/
        self._options = options
        self._fs: AbstractFileSystem | None = None
        self.swept: list[str] = []
        if sweep is not None:  # what runs that were killed uploaded (a run record's sweep): removed now, not by compact
            self.swept = sweep(self.fs, fsspec.core.url_to_fs(self.url, **options)[1])

    @property
    def fs(self) -> AbstractFileSystem:
        if self._fs is None:
            self._fs, _ = fsspec.core.url_to_fs(self.url, **self._options)
        return self._fs

    def remote_path(self, name: str) -> str:
        return fsspec.core.url_to_fs(f"{self.url}/{self.run_dir}/{name}", **self._options)[1]

    def close(self) -> None:
        shutil.rmtree(self.local, ignore_errors=True)


def sweep_dead_scratch(base: str | None = None) -> list[str]:
    """Remove the local scratch directories (`vidbatch-<pid>-*`) of runs on this host whose process is gone."""
    base = base or tempfile.gettempdir()
    removed = []
    for name in os.listdir(base):
        parts = name.split("-")
        if len(parts) < 3 or parts[0] != "vidbatch" or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
            continue  # alive (or another user's): not ours to remove
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(os.path.join(base, name), ignore_errors=True)
        removed.append(name)
    return removed


def scratch_prefix(cfg: RunConfig) -> str:
    """The scratch location as a URI prefix (to keep discovery away from it)."""
    url, options = cfg.scratch()
    fs, path = fsspec.core.url_to_fs(url, **options)
    return fs.unstrip_protocol(path).rstrip("/") + "/"


def prepare(item: WorkItem, fs: AbstractFileSystem, cfg: RunConfig, scratch: Scratch) -> Prepared:
    """Fetch, cut, transcode and shrink as planned; then deliver the result as the provider's delivery mode says."""
    if not item.ops:
        return Prepared(video_ref(fs, item.obj, cfg.provider), item.obj.size)
    work = tempfile.mkdtemp(dir=scratch.local)
    try:
        path, ops = _transform(item, fs, cfg, work)
        return _deliver(item, path, ops, cfg, scratch, work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _transform(item: WorkItem, fs: AbstractFileSystem, cfg: RunConfig, work: str) -> tuple[str, list[str]]:
    from tasks.media.segment import cut, shrink, transcode

    src = os.path.join(work, f"source.{item.obj.ext or 'bin'}")
    try:
        fs.get_file(item.obj.path, src)
    except FileNotFoundError:
        raise SourceError(f"{item.obj.uri}: vanished between listing and reading") from None
    if os.path.getsize(src) != item.obj.size:
        raise SourceError(f"{item.obj.uri}: changed between listing and reading (listed {item.obj.size:,} bytes, "
                          f"read {os.path.getsize(src):,}); the next run sends the new version")
    path = src
    ops: list[str] = []
    if "cut" in item.ops:
        end_s = item.segment_end_s
        assert end_s is not None  # plan_item sets segment_end_s on every item it plans a cut for
        c = cut(path, item.segment_start_s, end_s, os.path.join(work, f"segment.{item.ext}"),
                mode=cfg.media.cut_mode, container=item.ext)
        path, ops = c.path, ops + [f"cut:{c.mode}"]
    elif "transcode" in item.ops:
        path = transcode(path, os.path.join(work, f"transcoded.{item.ext}"), container=item.ext).path
        ops.append("transcode")
    limit = cfg.provider.media.max_bytes_per_video
    if limit and os.path.getsize(path) > limit:
        if not cfg.media.shrink:
            raise LimitError(f"{item.obj.uri}: {os.path.getsize(path):,} bytes is over provider "
                             f"{cfg.provider.name!r}'s limit of {limit:,} bytes per video; set media.shrink: true")
        done = shrink(path, os.path.join(work, "shrunk.mp4"), limit)
        path, ops = done.path, ops + ["shrink"]
    if "drop_audio" in item.ops:  # media.audio drop: the provider gets the video stream alone
        from tasks.media.audio import drop_audio

        path = drop_audio(path, os.path.join(work, f"silent.{path.rsplit('.', 1)[-1]}"), path.rsplit(".", 1)[-1])
        ops.append("drop_audio")
    return path, ops


def _deliver(item: WorkItem, path: str, ops: list[str], cfg: RunConfig, scratch: Scratch, work: str) -> Prepared:
    p = cfg.provider
    size = os.path.getsize(path)
    ext = path.rsplit(".", 1)[-1]
    name = item.obj.path.rsplit("/", 1)[-1]
    if p.delivery == "inline":
        return Prepared(local_ref(path, ext, name, p), size, ",".join(ops),
                        lambda: shutil.rmtree(work, ignore_errors=True))
    if p.delivery == "public_url":
        raise ConfigError(f"{item.obj.uri}: delivery public_url cannot serve a {'/'.join(ops)} copy; "
                          "use inline, presigned or storage_uri (with media.scratch_url)")
    protocols = set(scratch.fs.protocol if isinstance(scratch.fs.protocol, (tuple, list)) else [scratch.fs.protocol])
    if not protocols & OBJECT_STORE_PROTOCOLS:
        raise ConfigError(f"media.scratch_url {scratch.url!r}: delivery {p.delivery} needs cut and re-encoded files "
                          "in object storage the provider can read; set media.scratch_url to a bucket prefix")
    remote = scratch.remote_path(f"{item.request_key}.{ext}")
    scratch.fs.put_file(path, remote)
    url = scratch.fs.sign(remote, expiration=p.presign_expires_s) if p.delivery == "presigned" \
        else scratch.fs.unstrip_protocol(remote)

    def cleanup() -> None:
        shutil.rmtree(work, ignore_errors=True)
        try:
            scratch.fs.rm(remote)
        except FileNotFoundError:
            pass

    return Prepared(VideoRef(url=url, ext=ext, file_name=name), size, ",".join(ops), cleanup)
