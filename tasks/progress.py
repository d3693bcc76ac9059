"""Progress of a long run, visible on a terminal (one updating line) and in logs (a line every few seconds)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field


@dataclass
class RunTotals:
    """What a run did, summed over its batches."""

    ok: int = 0
    error: int = 0
    not_attempted: int = 0
    skipped_done: int = 0
    skipped_discover: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    estimated_prompt_tokens: int = 0
    planned: int = 0
    started: float = field(default_factory=time.monotonic)

    def add_row(self, row: dict) -> None:
        if row["status"] == "ok":
            self.ok += 1
        else:
            self.error += 1
            self.not_attempted += row.get("error_type") == "not_attempted"
        for k in ("prompt_tokens", "completion_tokens", "total_tokens", "estimated_prompt_tokens"):
            setattr(self, k, getattr(self, k) + int(row.get(k) or 0))

    @property
    def done(self) -> int:
        return self.ok + self.error

    @property
    def wall_s(self) -> float:
        return time.monotonic() - self.started

    def line(self) -> str:
        rate = self.done / self.wall_s if self.wall_s > 0 else 0.0
        return (f"{self.done}/{self.planned} done (ok {self.ok}, error {self.error}), {self.skipped_done} already "
                f"done, {rate:.1f} items/s, {self.total_tokens:,} tokens, {self.wall_s:.0f} s")

    def as_dict(self) -> dict:
        return {"ok": self.ok, "error": self.error, "skipped_already_done": self.skipped_done,
                **{f"skipped_{k}": v for k, v in sorted(self.skipped_discover.items())},
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens, "estimated_prompt_tokens": self.estimated_prompt_tokens,
                "wall_time_s": round(self.wall_s, 2)}


class Progress:
    """Prints RunTotals.line(): redrawn in place on a terminal, every `every_s` seconds otherwise."""

    def __init__(self, stream=None, every_s: float = 10.0, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every_s = 0.2 if self.tty else every_s
        self.enabled = enabled
        self._last = 0.0

    def update(self, totals: RunTotals, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < self.every_s):
            return
        self._last = now
        if self.tty:
            self.stream.write("\r\x1b[2K" + totals.line())
        else:
            self.stream.write(totals.line() + "\n")
        self.stream.flush()

    def close(self, totals: RunTotals) -> None:
        self.update(totals, force=True)
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


_current = Progress(enabled=False)


def set_progress(progress: Progress) -> None:
    """Install the progress display the next runs report to (the CLI turns it on)."""
    global _current
    _current = progress


def current_progress() -> Progress:
    return _current
