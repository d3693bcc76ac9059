"""Open a provider connection: the configured endpoint, or an embedded offline localapi started for the run."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from tasks.call.auth import Credentials
from tasks.call.client import ProviderClient
from tasks.config.connection import Connection
from tasks.config.run import ProviderConfig, RunConfig
from tasks.dialects.base import Dialect
from tasks.dialects.registry import dialect
from tasks.errors import ConfigError


def _served(d: Dialect) -> str:
    if d.localapi_prefix is None:
        raise ConfigError(f"provider.base_url: the offline localapi does not speak the {d.name} dialect")
    return d.localapi_prefix


def localapi_prefix(connection: Connection) -> str:
    """Where a connection's API lives on a localapi server: its dialect's prefix, or the root for generation."""
    return _served(connection.dialect_record) if isinstance(connection, ProviderConfig) else ""


def localapi_base_url(server_url: str, dialect_name: str) -> str:
    """The base_url of a dialect on a localapi server."""
    return server_url.rstrip("/") + _served(dialect(dialect_name))


@asynccontextmanager
async def open_provider(target: RunConfig | Connection, transport: httpx.AsyncBaseTransport | None = None,
                        storage_options: dict[str, Any] | None = None,
                        **client_kwargs) -> AsyncIterator[ProviderClient]:
    """A ProviderClient for a run's provider or any Connection; base_url `localapi` starts an offline localapi."""
    connection: Connection = target.provider if isinstance(target, RunConfig) else target
    if isinstance(target, RunConfig):  # the localapi reads the videos from the run's source
        storage_options = target.source.storage_options
    if not connection.embedded:
        async with ProviderClient(connection, Credentials(connection), transport=transport, **client_kwargs) as client:
            yield client
        return
    from localapi import LocalAPI, LocalAPIConfig

    base_path = localapi_prefix(connection)
    key = "vb-local-" + secrets.token_urlsafe(16)  # a fresh key per run: never configured, never stored
    storage = dict(storage_options or {})
    api = LocalAPI(LocalAPIConfig(api_key=key, storage_options=storage,
                                  storage_endpoint=storage.get("endpoint_url")))
    api.start()
    try:
        async with ProviderClient(connection, Credentials(connection, token=key), api.url.rstrip("/") + base_path,
                                  transport=transport, **client_kwargs) as client:
            yield client
    finally:
        api.stop()
