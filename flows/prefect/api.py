"""A Prefect API for a command run on its own: the configured one, or a temporary server in a child process.

Without PREFECT_API_URL, Prefect 3.8 starts a temporary server in a subprocess too, but to do so it imports
its whole server (FastAPI, SQLAlchemy, the models and services) into the flow's own process: ~80 MB of the
run's memory that the run never uses. This starts the same server (`uvicorn` on Prefect's `create_app`
factory, UI off, ephemeral settings, as Prefect's SubprocessASGIServer does) without importing it here,
points this process and its children at it, and stops it when the command ends (on Linux also when the
command is killed outright: the server gets SIGTERM as its parent dies, so none is left behind).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

PORT_IN_USE = 3  # uvicorn's exit code when it could not bind


PR_SET_PDEATHSIG = 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the command's process dies, even by SIGKILL (Linux only)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _start(port: int) -> subprocess.Popen:
    import prefect
    from prefect.settings import get_current_settings

    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
           **get_current_settings().to_environment_variables(exclude_unset=True)}
    env.pop("PREFECT_API_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
         "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "error",
         "--lifespan", "on"], env=env, stdin=subprocess.DEVNULL,
        # its own session: a terminal's Ctrl-C goes to the command's process group, and the server must outlive
        # the run's last calls (its summary, its final state); the command stops it, or its death does
        start_new_session=True, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)


def start_temporary_server(timeout_s: float | None = None) -> tuple[subprocess.Popen, str]:
    """Start a temporary Prefect server in a child process; (process, API URL) once it answers /health.

    It waits PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS but at least 60 s: a fresh PREFECT_HOME builds
    its database first, which on a busy two-core machine can take longer than Prefect's 20 s default."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    timeout_s = timeout_s or max(60.0, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    port = _free_port()
    proc = _start(port)
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5) as http:
        while True:
            code = proc.poll()
            if code == PORT_IN_USE:  # taken between our check and its bind: another port
                port = _free_port()
                proc = _start(port)
            elif code is not None:
                raise RuntimeError(f"the temporary Prefect server exited with code {code} before it answered")
            try:
                if http.get(f"http://127.0.0.1:{port}/api/health").status_code == 200:
                    return proc, f"http://127.0.0.1:{port}/api"
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError(f"the temporary Prefect server did not answer within {timeout_s:.0f} s "
                                   "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)")
            time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _drain_prefect_workers(timeout_s: float = 15) -> None:
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=timeout_s)
        except Exception as e:  # a log line lost is no reason to fail a finished run
            print(f"vidbatch: could not send Prefect's last {worker.__name__} items: {e}", file=sys.stderr)


@contextmanager
def prefect_api() -> Iterator[str | None]:
    """Within: PREFECT_API_URL names a server (the configured one, or a temporary one this starts)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured or not PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value():
        yield configured  # with neither, Prefect's own error says what to set
        return
    from flows.prefect.shared_limits import TEMPORARY_API_ENV

    proc, url = start_temporary_server()
    before = {k: os.environ.get(k) for k in ("PREFECT_API_URL", TEMPORARY_API_ENV)}
    os.environ["PREFECT_API_URL"] = url  # children (a worker's subprocesses, our own) use it too
    os.environ[TEMPORARY_API_ENV] = url  # a shared limit on a server only this command uses shares nothing
    try:
        with temporary_settings({PREFECT_API_URL: url}):
            yield url
    finally:
        _drain_prefect_workers()  # the run's last logs and events reach the server before it stops
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        stop(proc)
