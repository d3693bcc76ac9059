"""Ctrl-C and SIGTERM during a run: stop sending, flush the finished rows, then end with the run's summary.

The handlers are the event loop's own (loop.add_signal_handler), so a signal is never raised inside some callback
where asyncio would log it and go on (Prefect's TerminationSignal handler did that). A second signal ends the
process at once."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from prefect.exceptions import TerminationSignal

SIGNALS = (signal.SIGINT, signal.SIGTERM)
stopping: list[int] = []  # the signal a run is stopping for: a repeat of it (Prefect re-sends SIGTERM) is let go


def absorb_repeats() -> None:
    """In the CLI, before the flow: a signal while a run stops is let go; at any other time it ends the process."""
    def handler(sig: int, frame: Any) -> None:
        if stopping:
            return
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)

    for sig in SIGNALS:
        signal.signal(sig, handler)


class RunStopped(TerminationSignal):
    """A run stopped by a signal after flushing its finished rows; `result` is its summary so far."""

    def __init__(self, signum: int, result: dict[str, Any]):
        super().__init__(signum)
        self.result = result


class Stopper:
    """While installed, SIGINT/SIGTERM cancel the task that installed it and remember which signal came."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> Stopper:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        for sig in SIGNALS:
            try:
                self._previous[sig] = signal.getsignal(sig)
                loop.add_signal_handler(sig, self._on_signal, sig, task)
            except (ValueError, RuntimeError):  # not the main thread: Prefect's own handling stays
                self._previous.pop(sig, None)
        return self

    def _on_signal(self, sig: int, task: asyncio.Task | None) -> None:
        if self.signum is not None:
            os._exit(128 + sig)  # asked twice: no more waiting
        self.signum = sig
        stopping.append(sig)
        if task is not None:
            task.cancel()

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for sig, previous in self._previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, previous)
        self._previous.clear()
