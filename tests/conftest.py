"""Shared fixtures: a real moto S3 server on 127.0.0.1, cached sample videos, the offline localapi."""

from __future__ import annotations

import os
import urllib.request

import pytest

from localapi.samples import SampleSpec, sample_bytes

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry from test servers: offline
os.environ.setdefault("DO_NOT_TRACK", "1")

_SAMPLES: dict = {}


def video(container: str = "mp4", seconds: float = 4, audio: bool = True, scene_seconds: float = 2,
          width: int = 160, height: int = 120, fps: int = 8) -> bytes:
    """A small sample video, made once per test session."""
    key = (container, seconds, audio, scene_seconds, width, height, fps)
    if key not in _SAMPLES:
        _SAMPLES[key] = sample_bytes(container, SampleSpec(seconds=seconds, scene_seconds=scene_seconds,
                                                           width=width, height=height, fps=fps, audio=audio))
    return _SAMPLES[key]


@pytest.fixture(scope="session")
def moto_server():
    """A moto S3 server for the whole session (reset per test by `s3`)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_server, monkeypatch):
    """An empty moto S3 with credentials in the environment; returns (s3fs filesystem, endpoint URL)."""
    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")).read()
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(endpoint_url=moto_server, use_listings_cache=False)
    yield fs, moto_server
    s3fs.S3FileSystem.clear_instance_cache()


def seed_bucket(fs, bucket: str, objects: dict[str, bytes]) -> None:
    """Create a bucket holding the given key -> bytes."""
    fs.mkdir(bucket)
    for key, data in objects.items():
        fs.pipe_file(f"{bucket}/{key}", data)
