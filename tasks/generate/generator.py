"""Video generation through the Luma generation task API: submit, poll to the end or a deadline, store the clips."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from urllib.parse import quote, urlsplit

import fsspec
import httpx

from tasks.call.client import ProviderClient
from tasks.call.provider import open_provider
from tasks.config.generate import GenerateConfig
from tasks.config.load import load_config
from tasks.config.run import OutputConfig
from tasks.errors import (
    AuthError,
    ConfigError,
    MalformedResponseError,
    MediaError,
    ProviderError,
    RetryableError,
    SourceError,
    VidbatchError,
    redact,
)
from tasks.generate.prompts import ImageSender, Prompt, strip_query
from tasks.generate.table import IN_PROGRESS, TERMINAL, Generation, Recorder, fresh
from tasks.media.probe import probe
from tasks.record.tables import now_utc, open_output, put_atomic
from tasks.record.totals import Totals

VIDEO_EXTENSIONS = ("mp4", "mov", "webm")


def _kinds(cls: type[VidbatchError]) -> set[str]:
    return {cls.kind} | {k for sub in cls.__subclasses__() for k in _kinds(sub)}


RETRYABLE_KINDS = _kinds(RetryableError) | {"source"}  # a submission that failed so may pass when sent again


@dataclass(frozen=True)
class Work:
    prompt: Prompt
    previous: Generation | None
    submit: bool  # False: the task exists, poll it


@dataclass
class Plan:
    work: list[Work]
    completed: int = 0  # finished before: nothing to do
    failed: int = 0  # failed before: sent again only with retry_failed
    held: int = 0  # new, beyond the limit

    @property
    def to_submit(self) -> int:
        return sum(w.submit for w in self.work)

    @property
    def to_resume(self) -> int:
        return sum(not w.submit for w in self.work)


def plan_work(prompts: list[Prompt], latest: dict[str, Generation], retry_failed: bool = False,
              limit: int | None = None) -> Plan:
    """Poll tasks in progress, submit prompts with no task, resubmit failed prompts only when asked."""
    plan, submits = Plan([]), 0
    for p in prompts:
        prev = latest.get(p.key)
        if prev is not None and prev.status == "completed":
            plan.completed += 1
            continue
        if prev is not None and prev.status == "in_progress" and prev.task_id:
            plan.work.append(Work(p, prev, submit=False))
            continue
        never_got_a_task = prev is not None and prev.task_id is None and prev.error_type in RETRYABLE_KINDS
        if prev is not None and prev.status == "failed" and not (retry_failed or never_got_a_task):
            plan.failed += 1
            continue
        if limit is not None and submits >= limit:
            plan.held += 1
            continue
        submits += 1
        plan.work.append(Work(p, prev, submit=True))
    return plan


def video_url_of(answer: dict) -> str | None:
    """The finished video's URL, wherever a Luma-style answer puts it."""
    assets, video = answer.get("assets"), answer.get("video")
    candidates = [assets.get("video") if isinstance(assets, dict) else None,
                  video.get("url") if isinstance(video, dict) else video,
                  video.get("download_url") if isinstance(video, dict) else None,
                  answer.get("video_url")]
    return next((c for c in candidates if isinstance(c, str) and urlsplit(c).scheme in ("http", "https")), None)


def failure_reason_of(answer: dict) -> str:
    for key in ("failure_reason", "fail_reason", "error", "message"):
        value = answer.get(key)
        if isinstance(value, dict):
            value = value.get("message")
        if value:
            return redact(str(value))
    return "the provider gave no reason"


def parse_time(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def observe(g: Generation, answer: dict, now: datetime) -> tuple[Generation, str | None]:
    """Fold one answer about a task into its generation; also return a warning worth logging, if any."""
    state = answer.get("state")
    if not isinstance(state, str) or not state.strip():
        raise MalformedResponseError("the task answer has no state")
    state = state.strip().lower()
    changes: dict = {"state": state}
    if state != g.state:
        changes["states"] = g.states + ({"state": state, "seen_at": now},)
    warning = None
    if state in TERMINAL:
        finished = g.finished_at or now
        changes["finished_at"] = finished
        if g.submitted_at is not None:
            changes["generation_s"] = round((finished - g.submitted_at).total_seconds(), 3)
    if state == "failed":
        changes.update(status="failed", error_type="provider", failure_reason=failure_reason_of(answer))
    elif state == "completed":
        url = video_url_of(answer)
        changes.update(status="in_progress", download_url=url, video_url=strip_query(url) if url else None)
        if url is None:
            warning = "completed, but the answer holds no video URL; polling again"
    else:
        changes["status"] = "in_progress"
        if state not in IN_PROGRESS:
            warning = f"unknown state {state!r}, treated as in progress"
    return replace(g, **changes), warning


def _json_object(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        raise MalformedResponseError("the answer is not valid JSON", response.status_code) from None
    if not isinstance(body, dict):
        raise MalformedResponseError("the answer is not a JSON object", response.status_code)
    return body


def _origin(url: str) -> tuple:
    p = urlsplit(url)
    return p.scheme.lower(), (p.hostname or "").lower(), p.port or {"http": 80, "https": 443}.get(p.scheme.lower())


class Generator:
    """Submits prompts, polls their tasks with backoff until they end or the deadline passes, and stores the clips."""

    def __init__(self, cfg: GenerateConfig, client: ProviderClient, base_url: str, recorder: Recorder, run_id: str,
                 images: ImageSender | None = None, log: logging.Logger | logging.LoggerAdapter | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = now_utc, totals: GenerateTotals | None = None,
                 on_change: Callable[[], None] | None = None):
        self.cfg, self.client, self.recorder, self.run_id = cfg, client, recorder, run_id
        self.totals = totals or GenerateTotals()
        self.submit_url = base_url.rstrip("/") + "/luma/generations"
        self.images = images or ImageSender(cfg.images, cfg.prompts.storage_options)
        self.log = log or logging.getLogger("vidbatch.generate")
        self._sleep, self._clock, self._now = sleep, clock, now
        self.on_change = on_change or (lambda: None)
        self.deadline = clock() + cfg.poll.deadline_s
        self.fs, self.videos_root = open_output(OutputConfig(url=cfg.output.videos_url,
                                                             storage_options=cfg.output.storage_options))
        self._gate = asyncio.Semaphore(cfg.provider.limits.concurrency + 2)  # request bodies alive at once

    async def track(self, work: Work) -> Generation:
        """Take one prompt as far as it goes in this run: submitted, finished and stored, or still in progress."""
        if not work.submit:  # the list may have moved the prompt to another row
            assert work.previous is not None, "plan_work polls only a prompt whose task was submitted before"
            g = replace(work.previous, prompt_source=work.prompt.source, prompt_row=work.prompt.row)
            g = await self._follow(g, 0.0)
        else:
            g = await self._submit(work.prompt, work.previous)
            if g.task_id is not None:
                g = await self._follow(g, self.cfg.poll.interval_s)
        self.totals.finish(g)
        self.on_change()
        return g

    async def track_all(self, work: list[Work]) -> list[Generation]:
        return list(await asyncio.gather(*(self.track(w) for w in work)))

    async def _record(self, g: Generation, durable: bool = False) -> Generation:
        g = replace(g, revision=g.revision + 1, run_id=self.run_id, job=self.cfg.job, created_at=self._now())
        await self.recorder.record(g.row(), durable)
        return g

    def _name(self, g: Generation) -> str:
        return f"prompt {g.prompt_key[:12]} ({(g.prompt_source or '').rsplit('/', 1)[-1]} row {g.prompt_row})"

    async def _submit(self, prompt: Prompt, previous: Generation | None) -> Generation:
        g = fresh(prompt, self.cfg.provider.name, previous)
        async with self._gate:
            try:
                body = await asyncio.to_thread(self.images.body, prompt)
                exchange = await self.client.request("POST", self.submit_url, body, request_key=prompt.key)
                del body
                answer = _json_object(exchange.response)
                task_id = answer.get("id")
                if not isinstance(task_id, (str, int)) or not str(task_id):
                    raise MalformedResponseError("the answer names no task id", exchange.response.status_code)
            except AuthError:
                raise
            except (ProviderError, SourceError) as e:
                g = replace(g, status="failed", error_type=e.kind, failure_reason=redact(str(e)),
                            http_status=getattr(e, "http_status", None))
                self.log.warning("%s: not submitted: %s", self._name(g), g.failure_reason)
                return await self._record(g, durable=True)
        now = self._now()
        state = str(answer.get("state") or "pending").strip().lower()
        g = replace(g, task_id=str(task_id), status="in_progress", state=state,
                    states=({"state": state, "seen_at": now},), submitted_at=now,
                    provider_created_at=parse_time(answer.get("created_at")),
                    submit_attempts=exchange.attempts, submit_latency_ms=exchange.latency_ms)
        g = await self._record(g, durable=True)  # stored before anything else happens to it: a rerun polls it
        self.totals.submitted += 1
        self.on_change()
        self.log.info("%s: submitted as task %s", self._name(g), g.task_id)
        return g

    async def _follow(self, g: Generation, wait: float) -> Generation:
        """Poll with backoff until the task ends (and its clip is stored) or the deadline passes."""
        poll = self.cfg.poll
        while True:
            pause = min(wait, max(0.0, self.deadline - self._clock()))
            if pause > 0:
                await self._sleep(pause)
            g, done = await self._poll_once(g)
            if done:
                return g
            if self._clock() >= self.deadline:
                self.log.info("%s: task %s still %s at the deadline; a rerun polls it again", self._name(g),
                              g.task_id, g.state)
                return await self._record(g)
            wait = poll.interval_s if wait <= 0 else min(wait * poll.backoff, poll.max_interval_s)

    async def _poll_once(self, g: Generation) -> tuple[Generation, bool]:
        assert g.task_id is not None, "only a submitted task is polled"
        try:
            exchange = await self.client.request("GET", f"{self.submit_url}/{quote(g.task_id, safe='')}")
            answer = _json_object(exchange.response)
            seen, warning = observe(g, answer, self._now())
        except AuthError:
            raise
        except ProviderError as e:
            g = replace(g, polls=g.polls + 1)
            if e.http_status == 404:
                g = replace(g, status="failed", error_type="lost", http_status=404, finished_at=self._now(),
                            failure_reason=f"the provider does not know task {g.task_id}: {redact(str(e))}")
                self.log.warning("%s: %s", self._name(g), g.failure_reason)
                return await self._record(g), True
            self.log.warning("%s: polling task %s failed, trying again later: %s", self._name(g), g.task_id, e)
            return g, False
        seen = replace(seen, polls=g.polls + 1)
        if warning:
            self.log.warning("%s: task %s %s", self._name(g), g.task_id, warning)
        if seen.status == "failed":
            self.log.warning("%s: task %s failed: %s", self._name(g), g.task_id, seen.failure_reason)
            return await self._record(seen), True
        if seen.state == "completed" and seen.download_url:
            if seen.state != g.state:
                seen = await self._record(seen)
            return await self._store(seen)
        if seen.state != g.state:
            seen = await self._record(seen)
        return seen, False

    def clip_path(self, g: Generation) -> str:
        ext = urlsplit(g.download_url or "").path.rsplit(".", 1)[-1].lower()
        slug = re.sub(r"[^a-z0-9]+", "-", (g.user_prompt or "").lower())[:40].strip("-") or "clip"
        return f"{self.videos_root}/{slug}-{g.prompt_key[:12]}.{ext if ext in VIDEO_EXTENSIONS else 'mp4'}"

    async def _store(self, g: Generation) -> tuple[Generation, bool]:
        """Download the finished video into the output storage (whole or not at all) and record where it is."""
        url, started = g.download_url, self._clock()
        assert url is not None, "_store is called for a completed task with its video's URL"
        try:
            same_host = _origin(url) == _origin(self.submit_url)  # credentials never go to another host
            exchange = await self.client.request("GET", url, auth=same_host, paced=same_host)
            data = exchange.response.content
            facts = await asyncio.to_thread(probe, io.BytesIO(data), g.video_url or url)
            path = self.clip_path(g)
            await asyncio.to_thread(put_atomic, self.fs, path, data)
        except (ProviderError, MediaError, OSError) as e:
            kind = "media" if isinstance(e, MediaError) else "download" if isinstance(e, ProviderError) else "storage"
            g = replace(g, error_type=kind, failure_reason=redact(f"storing the video failed: {e}"))
            self.log.warning("%s: %s; polling again", self._name(g), g.failure_reason)
            return await self._record(g), False
        g = replace(g, status="completed", output_uri=self.fs.unstrip_protocol(path), output_bytes=len(data),
                    video_duration_s=facts.duration_s, video_width=facts.width, video_height=facts.height,
                    stored_at=self._now(), download_ms=int((self._clock() - started) * 1000), error_type=None,
                    failure_reason=None, http_status=None)
        self.log.info("%s: stored %s (%d bytes)", self._name(g), g.output_uri, len(data))
        return await self._record(g), True


def with_overrides(cfg: GenerateConfig, deadline_s: float | None = None,
                   summarize: str | None = None) -> GenerateConfig:
    """The config with the run's overrides (a deadline, a chained summarize config) applied."""
    if deadline_s is not None:
        if deadline_s <= 0:
            raise ConfigError(f"--deadline {deadline_s}: must be a positive number of seconds")
        cfg = cfg.model_copy(update={"poll": cfg.poll.model_copy(update={"deadline_s": float(deadline_s)})})
    if summarize is not None:
        cfg = cfg.model_copy(update={"summarize": summarize})
    return cfg


def _normalized(url: str, options: dict) -> str:
    fs, root = fsspec.core.url_to_fs(url, **options)
    return fs.unstrip_protocol(root.rstrip("/"))


def check_chain(cfg: GenerateConfig) -> str | None:
    """The summarize run config to chain, checked to read the clips folder; None when there is none."""
    if not cfg.summarize:
        return None
    run = load_config(cfg.summarize)
    want = _normalized(cfg.output.videos_url, cfg.output.storage_options)
    if _normalized(run.source.url, run.source.storage_options) != want:
        raise ConfigError(f"summarize: {cfg.summarize} reads {run.source.url}, not the generated clips; set its "
                          f"source.url to {cfg.output.videos_url}")
    return cfg.summarize


@asynccontextmanager
async def open_generation_client(cfg: GenerateConfig, transport: httpx.AsyncBaseTransport | None = None,
                                 **client_kwargs) -> AsyncIterator[tuple[ProviderClient, str]]:
    """A client and the base URL for the run (open_provider; a `localapi` one reads the images' storage)."""
    storage = cfg.images.storage_options or cfg.prompts.storage_options
    async with open_provider(cfg.provider, transport, storage, **client_kwargs) as client:
        yield client, client.base_url


@dataclass
class GenerateTotals(Totals):
    """What a generate run did."""

    prompts: int = 0
    to_submit: int = 0
    to_resume: int = 0
    skipped_completed: int = 0
    skipped_failed: int = 0
    held_by_limit: int = 0
    submitted: int = 0
    completed: int = 0
    failed: int = 0
    in_progress: int = 0
    output_bytes: int = 0

    @classmethod
    def of(cls, prompts: int, plan: Plan) -> GenerateTotals:
        return cls(prompts=prompts, to_submit=plan.to_submit, to_resume=plan.to_resume,
                   skipped_completed=plan.completed, skipped_failed=plan.failed, held_by_limit=plan.held)

    def finish(self, g: Generation) -> None:
        """Count a generation as this run leaves it."""
        if g.status == "completed":
            self.completed += 1
            self.output_bytes += g.output_bytes or 0
        elif g.status == "failed":
            self.failed += 1
        else:
            self.in_progress += 1

    def line(self) -> str:
        work = self.to_submit + self.to_resume
        return (f"{self.completed + self.failed}/{work} finished (completed {self.completed}, failed {self.failed}), "
                f"{self.submitted} submitted, {self.to_resume} resumed, {self.skipped_completed} already done, "
                f"{self.wall_s:.0f} s")

    def as_dict(self) -> dict:
        return {"prompts": self.prompts, "submitted": self.submitted, "resumed": self.to_resume,
                "completed": self.completed, "failed": self.failed, "in_progress": self.in_progress,
                "skipped_completed": self.skipped_completed, "skipped_failed": self.skipped_failed,
                "held_by_limit": self.held_by_limit, "output_bytes": self.output_bytes,
                "wall_time_s": round(self.wall_s, 2)}
