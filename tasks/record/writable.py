"""Check, before the first request, that a run's output can be written: a probe write that leaves nothing behind."""

from __future__ import annotations

import errno
import os
import uuid

from fsspec.implementations.local import LocalFileSystem

from tasks.config.run import OutputConfig
from tasks.errors import ConfigError
from tasks.record.tables import open_output
from tasks.secrets import strip_userinfo

PROBE_BYTES = b"vidbatch write probe\n" * 200  # a few KB: a full disk refuses it where an empty file would pass


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return "no space left on the device"
    if isinstance(e, (PermissionError,)) or isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EPERM,
                                                                                    errno.EACCES):
        return "permission denied (read-only or not writable)"
    if isinstance(e, (NotADirectoryError, FileExistsError)):
        return "a path in it is a file, not a directory"
    if isinstance(e, FileNotFoundError):
        return "no such bucket or directory"
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}"[:200]


def check_writable(output: OutputConfig, what: str = "output.url") -> None:
    """Raise ConfigError naming the output when a small file cannot be written (and removed) there."""
    shown = strip_userinfo(output.url)
    try:
        fs, root = open_output(output)
    except (ImportError, ValueError) as e:
        raise ConfigError(f"{what} {shown!r}: cannot open this storage: {e}") from None
    probe = f"{root}/.vidbatch-write-probe-{uuid.uuid4().hex[:12]}"
    made: list[str] = []
    try:
        if isinstance(fs, LocalFileSystem):
            if os.path.exists(root) and not os.path.isdir(root):
                raise NotADirectoryError(root)
            missing, d = [], root
            while d and not os.path.exists(d):
                missing.append(d)
                d = os.path.dirname(d)
            for d in reversed(missing):
                os.mkdir(d)
                made.append(d)
            with open(probe, "wb") as f:
                f.write(PROBE_BYTES)
                f.flush()
                os.fsync(f.fileno())
            os.remove(probe)
        else:
            fs.pipe_file(probe, PROBE_BYTES)
            fs.rm(probe)
    except Exception as e:  # noqa: BLE001 - any backend's refusal is reported the same way, naming the output
        if isinstance(fs, LocalFileSystem) and os.path.exists(probe):
            os.remove(probe)
        raise ConfigError(f"{what} {shown!r}: not writable: {_reason(e)}; nothing was sent") from None
    finally:
        for d in reversed(made):  # leave nothing behind: the run makes what it needs itself
            try:
                os.rmdir(d)
            except OSError:
                pass
