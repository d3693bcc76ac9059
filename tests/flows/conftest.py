"""Fixtures for flow tests: Prefect's test harness, localapi over HTTP, configs for a moto bucket."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from localapi import LocalAPI, LocalAPIConfig
from tasks.call.provider import localapi_base_url

API_KEY = "sk-test-SECRET-6f1d2c"


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def localapi(s3):
    _, endpoint = s3
    with LocalAPI(LocalAPIConfig(api_key=API_KEY, storage_endpoint=endpoint,
                                 storage_options={"endpoint_url": endpoint})) as api:
        yield api


@pytest.fixture
def make_config(tmp_path, monkeypatch, s3):
    """Write a run config for a moto bucket and a localapi (or any base URL); returns its path."""
    _, endpoint = s3
    monkeypatch.setenv("VB_TEST_KEY", API_KEY)

    def make(api=None, dialect="openai", delivery="inline", bucket="videos", prefix="", base_url=None,
             name="run.yaml", ledger="ledger", **provider):
        p = {"name": f"localapi-{dialect}", "dialect": dialect, "model": provider.pop("model", {
                 "openai": "google/gemini-2.5-flash", "gdc": "gemini-2.5-flash", "trinity": "gpt-4o"}[dialect]),
             "base_url": base_url or localapi_base_url(api.url, dialect), "api_key_env": "VB_TEST_KEY",
             "delivery": delivery, "max_attempts": 4, "backoff_initial_s": 0.05, "backoff_max_s": 0.2,
             "timeout_s": 20, "limits": {"concurrency": 4}}
        if dialect == "gdc":
            p.update(project="proj", location="loc")
        p.update(provider)
        cfg = {"job": "test-run",
               "source": {"url": f"s3://{bucket}/{prefix}", "storage_options": {"endpoint_url": endpoint}},
               "provider": p,
               "prompt": {"system": "You are terse.", "user": "Summarize this video.", "params": {"temperature": 0}},
               "output": {"url": str(tmp_path / ledger), "batch_size": 2}}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
        return path

    return make


def prefect_api(method: str, path: str, **kw):
    """Call the test server's REST API (its filter endpoints want bodies the 3.8 client does not send)."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    r = httpx.request(method, PREFECT_API_URL.value().rstrip("/") + path, timeout=30, **kw)
    r.raise_for_status()
    return r.json()


def artifacts(key: str | None = None) -> list[dict]:
    body = {"limit": 200, "offset": 0, "sort": "CREATED_DESC"}
    if key:
        body["artifacts"] = {"key": {"any_": [key]}}
    return prefect_api("POST", "/artifacts/filter", json=body)


def all_logs() -> list[dict]:
    out, offset = [], 0
    while page := prefect_api("POST", "/logs/filter", json={"limit": 200, "offset": offset, "sort": "TIMESTAMP_ASC"}):
        out += page
        offset += len(page)
    return out


def start_run(config, *args: str, prefect_home=None, **popen) -> subprocess.Popen:
    """`vidbatch run CONFIG --quiet` as a child process against the test's Prefect server (text pipes unless told);
    with `prefect_home`, against no server: the run starts its own temporary one, as a new user's does."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    if prefect_home is not None:
        del env["PREFECT_API_URL"]
        env["PREFECT_HOME"] = str(prefect_home)
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(config), "--quiet", *args], env=env,
                            text=True, **popen)
