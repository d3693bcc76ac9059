"""Fixtures for the localapi tests: one server per module, sample videos, seed-shaped payloads, a file server."""

from __future__ import annotations

import base64
import functools
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import urlsplit

import httpx
import pytest

from localapi import LocalAPI, LocalAPIConfig
from localapi.samples import SampleSpec, sample_bytes

SPEC = SampleSpec(seconds=6, scene_seconds=2, width=160, height=120, fps=8, audio=True)
SHORT = SampleSpec(seconds=2, scene_seconds=1, width=160, height=120, fps=6, audio=False)
TOKEN = "test-token-not-a-secret"
PATHS = {
    "openai": "/v1/chat/completions",
    "trinity": "/trinity/v1/chat/completions",
    "gdc": "/v1/projects/demo-project/locations/zone-a/chat/completions",
}
MODELS = {"openai": "google/gemini-2.5-flash", "gdc": "gemini-2.5-flash", "trinity": "gpt-4o"}
GDC_MIME = {"avi": "video/avi", "flv": "video/x-flv", "mov": "video/mov", "mpeg": "video/mpeg", "mpg": "video/mpg",
            "mp4": "video/mp4", "webm": "video/webm", "wmv": "video/wmv", "3gpp": "video/3gpp"}
TRINITY_MIME = {"mp4": "video/mp4", "mpeg": "video/mpeg", "mov": "video/quicktime", "webm": "video/webm"}


@functools.cache
def sample(container: str = "mp4", spec: SampleSpec = SPEC) -> bytes:
    """A sample video, encoded once per session."""
    return sample_bytes("3gp" if container == "3gpp" else container, spec)


def data_url(data: bytes, mime: str = "video/mp4") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def video_part(dialect: str, *, container: str = "mp4", spec: SampleSpec = SPEC, url: str | None = None,
               mime: str | None = None, name: str = "clip.mp4") -> dict:
    """A video part shaped like the provider documents' examples: inline (a data URL of a sample) unless `url` is
    given."""
    if url is None:
        default = {"gdc": GDC_MIME, "trinity": TRINITY_MIME}.get(dialect, {}).get(container, f"video/{container}")
        url = data_url(sample(container, spec), mime or default)
    if dialect == "trinity":
        return {"type": "file", "file_name": name, "file_url": url}
    if dialect == "gdc" and url.startswith("data:"):
        return {"type": "input_video", "input_video": {"data": url, "format": container}}
    return {"type": "video_url", "video_url": {"url": url}}


def request_body(dialect: str, *parts: dict, text: str = "Describe what happens in this video.") -> dict:
    """A request body: gdc puts the video first (Gemini on GDC video understanding), openai and trinity the text
    first (Lunos video input, Trinity video input)."""
    parts = parts or (video_part(dialect),)
    content = [*parts, {"type": "text", "text": text}] if dialect == "gdc" else [{"type": "text", "text": text}, *parts]
    return {("model_id" if dialect == "gdc" else "model"): MODELS[dialect],
            "messages": [{"role": "user", "content": content}]}


def video_tokens(seconds: int, audio: bool, frame_tokens: int = 258) -> int:
    """The token rules of Gemini on GDC video understanding: per second a frame, a 7-token timestamp and 32 audio
    tokens."""
    return seconds * (frame_tokens + 7 + (32 if audio else 0))


def text_tokens(*texts: str) -> int:
    return sum(math.ceil(len(t) / 4) for t in texts)


@pytest.fixture(scope="module")
def server():
    with LocalAPI(LocalAPIConfig()) as api:
        yield api


@pytest.fixture
def api(server):
    """The module's server with a fresh config and cleared stats."""
    server.config = LocalAPIConfig()
    server.reset()
    return server


@pytest.fixture
def client(api):
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30,
                      trust_env=False) as c:
        yield c


@pytest.fixture
def post(client):
    """POST a body to a dialect's route."""

    def send(dialect: str, body, **kwargs) -> httpx.Response:
        return client.post(PATHS[dialect], json=body, **kwargs)

    return send


@pytest.fixture(scope="module")
def file_server():
    """A tiny http server answering GET for the paths in `.files`."""
    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            data = files.get(urlsplit(self.path).path)
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, args=(0.1,), daemon=True).start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{srv.server_address[1]}", files=files)
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def bucket(s3):
    """The shared moto S3 (tests/conftest.py) holding videos/clip.mp4, a sample; returns (s3fs, endpoint)."""
    fs, endpoint = s3
    fs.mkdir("videos")
    fs.pipe_file("videos/clip.mp4", sample("mp4"))
    return fs, endpoint


@pytest.fixture(scope="session")
def kit():
    """The payload builders and expected-value helpers above, for the test modules."""
    return SimpleNamespace(spec=SPEC, short=SHORT, token=TOKEN, paths=PATHS, sample=sample, data_url=data_url,
                           part=video_part, body=request_body, video_tokens=video_tokens, text_tokens=text_tokens)
