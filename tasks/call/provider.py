"""Open a run's provider: the configured endpoint, or an embedded offline localapi started for the run."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from tasks.call.auth import Credentials
from tasks.call.client import ProviderClient
from tasks.config.run import RunConfig

# where each dialect lives on a localapi server
LOCALAPI_PREFIX = {"openai": "/v1", "trinity": "/trinity/v1", "gdc": ""}


def localapi_base_url(server_url: str, dialect: str) -> str:
    return server_url.rstrip("/") + LOCALAPI_PREFIX[dialect]


@asynccontextmanager
async def open_provider(cfg: RunConfig, transport: httpx.AsyncBaseTransport | None = None,
                        **client_kwargs) -> AsyncIterator[ProviderClient]:
    """A ProviderClient for the run; for base_url `localapi`, an offline localapi serves the run's calls."""
    p = cfg.provider
    if not p.embedded:
        async with ProviderClient(p, Credentials(p), transport=transport, **client_kwargs) as client:
            yield client
        return
    from localapi import LocalAPI, LocalAPIConfig

    key = "vb-local-" + secrets.token_urlsafe(16)  # a fresh key per run: never configured, never stored
    storage = dict(cfg.source.storage_options)
    api = LocalAPI(LocalAPIConfig(api_key=key, storage_options=storage,
                                  storage_endpoint=storage.get("endpoint_url")))
    api.start()
    try:
        async with ProviderClient(p, Credentials(p, token=key), base_url=localapi_base_url(api.url, p.dialect),
                                  transport=transport, **client_kwargs) as client:
            yield client
    finally:
        api.stop()
