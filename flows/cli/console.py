"""All terminal output: the progress line, plans, summaries."""

from __future__ import annotations

import sys
import time

from tasks.record.totals import RunTotals


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


def print_summary(result: dict, out=sys.stdout) -> None:
    keys = ["ok", "error", "skipped_already_done"] + sorted(k for k in result if k.startswith("skipped_")
                                                              and k != "skipped_already_done")
    keys += ["prompt_tokens", "completion_tokens", "total_tokens", "estimated_prompt_tokens", "wall_time_s"]
    width = max(len(k) for k in keys)
    print("summary:", file=out)
    for k in keys:
        if k in result:
            v = result[k]
            print(f"  {k:<{width}}  {v:,}" if isinstance(v, int) else f"  {k:<{width}}  {v}", file=out)
    print(f"  {'ledger':<{width}}  {result['output']}", file=out)


def print_plan(planned: list[dict], out=sys.stdout) -> None:
    print("dry run: nothing is sent; would send", file=out)
    for p in planned:
        if p["error"]:
            print(f"  ERROR  {p['source_uri']}: {p['error']}", file=out)
        else:
            audio = "audio" if p["has_audio"] else "no audio"
            extra = " ".join(x for x in (p["segment"] and f"segment {p['segment']}", p["ops"]) if x)
            print(f"  {p['estimated_prompt_tokens']:>8,} tok  {p['duration_s']:>8.1f} s  {audio:<8}  {p['mime']:<12} "
                  f"{p['source_uri']}{'  (' + extra + ')' if extra else ''}", file=out)
