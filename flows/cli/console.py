"""All terminal output: the progress line, dry-run plans and summaries (this module imports no flow)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tasks.record.totals import Totals


class Progress:
    """Prints a run's Totals.line(): redrawn in place on a terminal, every `every_s` seconds otherwise."""

    def __init__(self, stream=None, every_s: float = 10.0, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every_s = 0.2 if self.tty else every_s
        self.enabled = enabled
        self._last = 0.0

    def update(self, totals: Totals, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < self.every_s):
            return
        self._last = now
        if self.tty:
            self.stream.write("\r\x1b[2K" + totals.line())
        else:
            self.stream.write(totals.line() + "\n")
        self.stream.flush()

    def close(self, totals: Totals) -> None:
        self.update(totals, force=True)
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def print_summary(result: dict, out: TextIO = sys.stdout) -> None:
    """The closing summary of `vidbatch run` and `vidbatch index`."""
    keys = ["ok", "error", "skipped_already_done"] + sorted(k for k in result if k.startswith("skipped_")
                                                              and k != "skipped_already_done")
    keys += ["prompt_tokens", "completion_tokens", "total_tokens", "estimated_prompt_tokens", "wall_time_s"]
    width = max(len(k) for k in keys)
    print("summary:", file=out)
    for k in keys:
        if k in result:
            v = result[k]
            print(f"  {k:<{width}}  {v:,}" if isinstance(v, int) else f"  {k:<{width}}  {v}", file=out)
    print(f"  {'ledger':<{width}}  {result['ledger']}", file=out)
    if "entries" in result:
        print(f"  entries written  {result['entries']:,} to {result['index']}", file=out)


def print_plan(planned: list[dict], total_tokens: int, what: str, out: TextIO = sys.stdout) -> None:
    """A dry run's plan: one line per request it would send, then the estimated total."""
    print("dry run: nothing is sent; would send", file=out)
    for p in planned:
        if p["error"]:
            print(f"  ERROR  {p['source_uri']}: {p['error']}", file=out)
        else:
            audio = "audio" if p["has_audio"] else "no audio"
            extra = " ".join(x for x in (p["segment"] and f"segment {p['segment']}", p["ops"]) if x)
            print(f"  {p['estimated_prompt_tokens']:>8,} tok  {p['duration_s']:>8.1f} s  {audio:<8}  {p['mime']:<12} "
                  f"{p['source_uri']}{'  (' + extra + ')' if extra else ''}", file=out)
    print(f"total estimated prompt tokens: {total_tokens:,} for {len(planned)} {what}", file=out)


def print_generate_plan(result: dict, out: TextIO = sys.stdout) -> None:
    print(f"dry run: nothing is sent; would submit {result['to_submit']} prompts and poll {result['resumed']} "
          f"tasks ({result['skipped_completed']} already completed, {result['skipped_failed']} failed before)",
          file=out)


def print_generate_summary(result: dict, out: TextIO = sys.stdout) -> None:
    """The closing summary of `vidbatch generate`."""
    keys = ["prompts", "submitted", "resumed", "completed", "failed", "in_progress", "skipped_completed",
            "skipped_failed", "held_by_limit", "output_bytes", "wall_time_s"]
    width = max(len(k) for k in keys + ["generations"])
    print("generate summary:", file=out)
    for k in keys:
        v = result[k]
        print(f"  {k:<{width}}  {v:,}" if isinstance(v, int) else f"  {k:<{width}}  {v}", file=out)
    print(f"  {'generations':<{width}}  {result['table']}", file=out)
    print(f"  {'videos':<{width}}  {result['videos']}", file=out)
    if result["summarize"]:
        s = result["summarize"]
        print(f"  {'summarized':<{width}}  ok {s['ok']}, error {s['error']}, already done "
              f"{s['skipped_already_done']} -> {s['output']}", file=out)
