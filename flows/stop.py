"""Ctrl-C and SIGTERM during a run: stop sending, flush the finished rows, then end with the run's summary.

The handlers are the event loop's own (loop.add_signal_handler), so a signal is never raised inside some callback
where asyncio would log it and go on (Prefect's TerminationSignal handler did that). A second signal ends the
process at once."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from prefect.exceptions import Abort, TerminationSignal

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


class RunCancelled(Abort):
    """A run stopped by the SIGTERM of a cancel from the Prefect server (a worker cancelling it), after flushing its
    finished rows; its state is already Cancelled, so the engine proposes none (`state`, as for an Abort).

    Prefect's runner tells its child it is cancelling over a control channel that only Prefect's own SIGTERM
    handler may acknowledge; the run's handler (the event loop's, see Stopper) cannot, so without this the
    engine takes the SIGTERM for a crash and the run ends Crashed instead of Cancelled."""

    def __init__(self, signum: int, result: dict[str, Any], state: Any):
        super().__init__(f"cancelled from the Prefect server: stopped by {signal.Signals(signum).name}")
        self.signal, self.result, self.state = signum, result, state


async def stopped(signum: int, result: dict[str, Any]) -> BaseException:
    """What a run stopped by `signum` raises: RunCancelled (state set Cancelled) when the server is cancelling
    its flow run, else RunStopped (the engine records it Crashed)."""
    from prefect.client.orchestration import get_client
    from prefect.logging import get_logger
    from prefect.runtime import flow_run
    from prefect.states import Cancelled

    if signum == signal.SIGTERM and flow_run.id:
        try:
            async with get_client() as client:
                run = await client.read_flow_run(flow_run.id)
                if run.state is not None and run.state.is_cancelling():
                    state: Any = Cancelled(message=f"cancelled: stopped by SIGTERM after {result.get('ok', 0)} ok, "
                                              f"{result.get('error', 0)} error rows were flushed")
                    done = await client.set_flow_run_state(run.id, state, force=True)
                    return RunCancelled(signum, result, done.state or state)
        except Exception as e:  # noqa: BLE001 - the server unreachable: the run still stops, recorded Crashed
            get_logger(__name__).warning("could not read or set the flow run's state after SIGTERM: %s", e)
    return RunStopped(signum, result)


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
