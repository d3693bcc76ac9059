"""Credentials: an API key from the environment, or a bearer token from a command, refreshed when it expires."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable

from tasks.config.connection import Connection
from tasks.errors import ConfigError, redact
from tasks.secrets import hold


class Credentials:
    """A bearer token from an environment variable, a fixed value, or a command (cached, refreshed)."""

    def __init__(self, provider: Connection, token: str | None = None,
                 run: Callable = subprocess.run, clock: Callable[[], float] = time.monotonic):
        self._provider, self._token, self._run, self._clock = provider, token, run, clock
        self._expires = float("inf") if token else float("-inf")
        hold(token)

    def header(self) -> dict[str, str]:
        """The Authorization header, running the token command when the cached token has expired."""
        p = self._provider
        if self._token is None and p.api_key_env:
            value = os.environ.get(p.api_key_env)
            if not value:
                raise ConfigError(f"provider.api_key_env: environment variable {p.api_key_env_shown} is not set")
            self._token, self._expires = value, float("inf")
        if p.token_command and self._clock() >= self._expires:
            self._token = self._run_command(p.token_command)
            self._expires = self._clock() + p.token_ttl_s
        if self._token:
            hold(self._token)  # whatever a provider echoes of it, no message, row or log line shows it
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def refresh(self) -> bool:
        """Forget a command's token so the next header runs it again; False when nothing can refresh."""
        if not self._provider.token_command:
            return False
        self._expires = float("-inf")
        return True

    def _run_command(self, command: str) -> str:
        try:
            done = self._run(shlex.split(command), capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ConfigError(f"provider.token_command {command.split()[0]!r} could not run: {e}") from None
        token = (done.stdout or "").strip()
        hold(token)
        if done.returncode != 0 or not token:
            raise ConfigError(f"provider.token_command {command.split()[0]!r} exited {done.returncode} "
                              f"without a token: {redact((done.stderr or '').strip(), 200)}")
        return token
