"""The Luma-style video generation endpoints of localapi (the Luma generation task API), offline.

    POST /luma/generations          validate as the Luma generation task API says,
                                    answer {id, state, created_at, request}
    GET  /luma/generations/{id}     the task now; completed answers carry the video URL
    GET  /luma/files/{id}.mp4       the clip: a small real mp4 (tasks.samples) sized to the aspect ratio
    GET  /_localapi/luma/stats      submissions per prompt, polls, downloads, refusals
    POST /_localapi/luma/config     change LumaSettings fields

A task's state is read from the clock: each of `states` lasts `step_s` seconds from its creation,
then it ends completed, or failed for a `failure_rate` share of submissions (decided per prompt and
attempt, so the same run gives the same outcome whatever the order of requests). Changing step_s
moves tasks already created too. Auth, rpm limits and injected faults are the server's own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypedDict
from urllib.parse import urlsplit

from localapi.config import LocalAPIConfig
from localapi.dialects import ApiError, invalid
from localapi.http import Reply, authorize, fault_reply
from localapi.sources import SourceError, fetch_http, origin, same_origin

ASPECT_RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16")
DEFAULT_ASPECT_RATIO = "16:9"
FIELDS = ("user_prompt", "expand_prompt", "image_url", "image_end_url", "notify_hook", "loop", "aspect_ratio")
FRAME_SIZES = {"1:1": (160, 160), "4:3": (160, 120), "3:4": (120, 160), "16:9": (192, 108), "9:16": (108, 192)}
IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF87a", "gif"), (b"GIF89a", "gif"))
PATHS = ("/luma/", "/_localapi/luma/")
RECENT_TASKS = 200


@dataclass
class LumaSettings:
    """How the offline generation service behaves; validated at construction."""

    step_s: float = 2.0
    states: tuple[str, ...] = ("pending", "queued", "dreaming", "processing")
    failure_rate: float = 0.0
    failure_reason: str = "localapi: the generation failed (simulated failure)"
    seed: int = 0
    clip_seconds: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.step_s, bool) or not isinstance(self.step_s, (int, float)) or self.step_s < 0:
            raise ValueError(f"step_s must be a non-negative number of seconds, got {self.step_s!r}")
        self.states = tuple(self.states)
        if not all(isinstance(s, str) and s and s not in ("completed", "failed") for s in self.states):
            raise ValueError(f"states must be names of in-progress states (not completed/failed), got {self.states!r}")
        if isinstance(self.failure_rate, bool) or not isinstance(self.failure_rate, (int, float)) \
                or not 0 <= self.failure_rate <= 1:
            raise ValueError(f"failure_rate must be within [0, 1], got {self.failure_rate!r}")
        if not isinstance(self.failure_reason, str) or not self.failure_reason:
            raise ValueError("failure_reason must be a non-empty text")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if isinstance(self.clip_seconds, bool) or not isinstance(self.clip_seconds, (int, float)) \
                or not 0.5 <= self.clip_seconds <= 30:
            raise ValueError(f"clip_seconds must be within [0.5, 30], got {self.clip_seconds!r}")

    def updated(self, changes: dict) -> LumaSettings:
        unknown = set(changes) - {f for f in asdict(self)}
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}; known: {', '.join(asdict(self))}")
        return replace(self, **changes)


def fails(seed: int, prompt: str, attempt: int, rate: float) -> bool:
    """Whether a submission ends failed: a draw fixed by the seed, the prompt and its attempt number (1-based)."""
    digest = hashlib.sha256(f"{seed}:{attempt}:{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


@dataclass
class _Task:
    id: str
    prompt: str
    aspect_ratio: str
    created: float  # service clock
    created_at: str  # as answered
    fails: bool
    polls: int = 0


class _Host(Protocol):
    """What LumaService uses of its LocalAPI: the config, the shared rpm window and faults, the stop event, the URL."""

    config: LocalAPIConfig
    stopping: threading.Event

    @property
    def url(self) -> str: ...

    def admit(self, tokens: int, cfg: LocalAPIConfig) -> dict: ...

    def next_fault(self, cfg: LocalAPIConfig) -> str: ...


class _Stats(TypedDict):
    submitted: int
    refused: int
    polls: int
    downloads: int
    by_prompt: Counter[str]  # submissions per prompt (its first 200 characters)
    faults: Counter[str]


class LumaService:
    """The generation tasks of one LocalAPI, their clock-driven states, clips and stats."""

    def __init__(self, api: _Host, settings: LumaSettings | None = None, clock=time.time):
        self.api, self.settings, self.clock = api, settings or LumaSettings(), clock
        self._lock = threading.Lock()
        self._clips: dict[tuple, bytes] = {}
        self.reset()

    def reset(self) -> None:
        """Forget every task and count from zero (the settings stay)."""
        with self._lock:
            self._tasks: dict[str, _Task] = {}
            self._recent: deque[str] = deque(maxlen=RECENT_TASKS)
            self._stats: _Stats = {"submitted": 0, "refused": 0, "polls": 0, "downloads": 0, "by_prompt": Counter(),
                           "faults": Counter()}

    def configure(self, changes: dict) -> LumaSettings:
        """Apply validated changes to the settings (ValueError when invalid)."""
        new = self.settings.updated(changes)
        with self._lock:
            self.settings = new
        return new

    def stats(self) -> dict:
        """A JSON-able snapshot: submissions per prompt, polls, downloads, refusals, faults and recent tasks."""
        with self._lock:
            out = json.loads(json.dumps(self._stats))
            recent = [self._tasks[i] for i in self._recent]
        out["tasks"] = [{"id": t.id, "prompt": t.prompt[:200], "state": self.state(t), "polls": t.polls}
                        for t in recent]
        return out

    @staticmethod
    def handles(path: str) -> bool:
        return path.startswith(PATHS)

    # -- requests ---------------------------------------------------------------------------------------------

    def respond(self, method: str, path: str, headers, body: bytes):
        try:
            if path == "/_localapi/luma/stats" and method == "GET":
                return Reply.json(200, self.stats())
            if path == "/_localapi/luma/config" and method == "POST":
                return self._configure(body)
            if path == "/luma/generations" and method == "POST":
                return self._gate(headers) or self._create(headers, body)
            if path.startswith("/luma/generations/") and method == "GET":
                return self._gate(headers) or self._get(path.removeprefix("/luma/generations/"))
            if path.startswith("/luma/files/") and path.endswith(".mp4") and method == "GET":
                return self._file(path.removeprefix("/luma/files/").removesuffix(".mp4"))
        except ApiError as exc:
            if exc.status == 400:
                with self._lock:
                    self._stats["refused"] += 1
            return Reply.error(exc)
        return Reply.error(ApiError(404, f"localapi has no route {method} {path[:100]}", code="not_found"))

    def _gate(self, headers):
        """Auth, the rpm window and injected faults, as for chat requests; a Reply when the request stops here."""
        cfg = self.api.config
        authorize(headers, cfg)
        self.api.admit(0, cfg)
        fault = self.api.next_fault(cfg)
        if fault == "ok":
            return None
        with self._lock:
            self._stats["faults"][fault] += 1
        if fault == "stall":
            self.api.stopping.wait(cfg.stall_s)
            return None
        if fault == "malformed":
            return Reply(200, b'{"id": "', content_type="application/json")
        return fault_reply(fault, cfg)

    def _configure(self, body: bytes):
        try:
            changes = json.loads(body or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object of LumaSettings fields")
            new = self.configure(changes)
        except (ValueError, TypeError) as exc:
            raise invalid(str(exc), None, "invalid_config") from None
        return Reply.json(200, {"luma": asdict(new)})

    def _create(self, headers, body: bytes):
        request = self.validate(body)
        prompt, ratio = request["user_prompt"], request.get("aspect_ratio") or DEFAULT_ASPECT_RATIO
        now = self.clock()
        created_at = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self._lock:
            self._stats["submitted"] += 1
            self._stats["by_prompt"][prompt[:200]] += 1
            attempt = self._stats["by_prompt"][prompt[:200]]
            task = _Task(str(uuid.uuid4()), prompt, ratio, now, created_at,
                         fails(self.settings.seed, prompt, attempt, self.settings.failure_rate))
            self._tasks[task.id] = task
            self._recent.append(task.id)
        return Reply.json(200, {"id": task.id, "state": self.state(task), "created_at": created_at,
                                "request": {"prompt": prompt, "aspect_ratio": ratio}})

    def _get(self, task_id: str):
        with self._lock:
            task = self._tasks.get(task_id)
            self._stats["polls"] += 1
            if task is not None:
                task.polls += 1
        if task is None:
            raise ApiError(404, f"no generation with id {task_id[:80]!r}", code="generation_not_found")
        state = self.state(task)
        answer: dict[str, Any] = {"id": task.id, "state": state, "created_at": task.created_at,
                  "request": {"prompt": task.prompt, "aspect_ratio": task.aspect_ratio},
                  "failure_reason": self.settings.failure_reason if state == "failed" else None,
                  "video": None, "assets": None}
        if state == "completed":
            url = f"{self.api.url}/luma/files/{task.id}.mp4"
            width, height = FRAME_SIZES[task.aspect_ratio]
            answer["video"] = {"url": url, "width": width, "height": height}
            answer["assets"] = {"video": url}
        return Reply.json(200, answer)

    def _file(self, task_id: str):
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None or self.state(task) != "completed":
            raise ApiError(404, "no finished video at this URL", code="video_not_found")
        with self._lock:
            self._stats["downloads"] += 1
        return Reply(200, self.clip(task.aspect_ratio), content_type="video/mp4")

    def state(self, task: _Task) -> str:
        """The task's state now: each in-progress state lasts step_s, then completed or failed."""
        s = self.settings
        index = len(s.states) if s.step_s <= 0 else int((self.clock() - task.created) / s.step_s)
        if index < len(s.states):
            return s.states[index]
        return "failed" if task.fails else "completed"

    def clip(self, aspect_ratio: str) -> bytes:
        """A small real mp4 for an aspect ratio, made once with tasks.samples."""
        from localapi.samples import SampleSpec, sample_bytes

        width, height = FRAME_SIZES[aspect_ratio]
        key = (aspect_ratio, self.settings.clip_seconds)
        with self._lock:
            if key not in self._clips:
                self._clips[key] = sample_bytes("mp4", SampleSpec(seconds=self.settings.clip_seconds, scene_seconds=1,
                                                                  width=width, height=height, fps=8, audio=False))
            return self._clips[key]

    # -- validation -------------------------------------------------------------------------------------------

    def validate(self, body: bytes) -> dict:
        """The request as the Luma generation task API describes it, or a 400 naming the field and what it takes."""
        try:
            request = json.loads(body)
        except ValueError as exc:
            raise invalid(f"the body is not valid JSON: {exc}", None, "invalid_json") from None
        if not isinstance(request, dict):
            raise invalid("the body must be a JSON object", None, "invalid_request")
        extra = [k for k in request if k not in FIELDS]
        if extra:
            raise invalid(f"unexpected field {str(extra[0])[:40]!r}; the fields are {', '.join(FIELDS)}",
                          str(extra[0])[:40], "unexpected_field")
        prompt = request.get("user_prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise invalid("user_prompt is required: a non-empty string describing the video", "user_prompt",
                          "missing_user_prompt" if prompt is None else "invalid_user_prompt")
        for name in ("expand_prompt", "loop"):
            if request.get(name) is not None and not isinstance(request[name], bool):
                raise invalid(f"{name} must be a boolean (true or false), got {type(request[name]).__name__}", name,
                              "invalid_type")
        ratio = request.get("aspect_ratio")
        if ratio is not None and ratio not in ASPECT_RATIOS:
            raise invalid(f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}; got {str(ratio)[:20]!r}",
                          "aspect_ratio", "invalid_aspect_ratio")
        for name in ("image_url", "image_end_url"):
            if request.get(name) is not None:
                self._check_image(request[name], name)
        hook = request.get("notify_hook")
        if hook is not None and (not isinstance(hook, str) or urlsplit(hook).scheme not in ("http", "https")
                                 or not urlsplit(hook).hostname):
            raise invalid("notify_hook must be an http(s) URL", "notify_hook", "invalid_notify_hook")
        return request

    def _check_image(self, value, name: str) -> None:
        """An image is an http(s) URL (fetched when it is on the storage endpoint) or base64, plain or a data URL."""
        if not isinstance(value, str) or not value:
            raise invalid(f"{name} must be a string: an image URL or base64", name, "invalid_image")
        scheme = urlsplit(value).scheme.lower() if "://" in value[:12] else ""
        if scheme in ("http", "https") and urlsplit(value).hostname:
            endpoint = self.api.config.storage_endpoint
            if endpoint and same_origin(value, endpoint):
                try:
                    data = fetch_http(value)
                except SourceError as exc:
                    raise invalid(f"{name} could not be fetched from {origin(value)}: {exc}", name,
                                  "unfetchable_image") from None
                self._check_image_bytes(data, name)
            return
        if scheme:
            raise invalid(f"{name} must be an http(s) URL or base64; got a URL with scheme {scheme[:10]!r}", name,
                          "invalid_image")
        payload = value
        if value.startswith("data:"):
            head, sep, payload = value[5:].partition(",")
            mime, *params = head.split(";")
            if not sep or not mime.lower().startswith("image/") or "base64" not in [p.lower() for p in params]:
                raise invalid(f"{name}: a data URL must read data:image/<type>;base64,<data>", name, "invalid_image")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise invalid(f"{name} is neither an http(s) URL nor valid base64 ({len(value)} characters)", name,
                          "invalid_image") from None
        self._check_image_bytes(data, name)

    @staticmethod
    def _check_image_bytes(data: bytes, name: str) -> None:
        if any(data.startswith(magic) for magic, _ in IMAGE_MAGIC):
            return
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return
        raise invalid(f"{name} does not hold a PNG, JPEG, GIF or WebP image ({len(data)} bytes)", name,
                      "not_an_image")
