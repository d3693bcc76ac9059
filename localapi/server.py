"""The localapi HTTP server: routes, auth, limits, injected faults, stats and the CLI."""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import traceback
from collections import Counter, deque
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypedDict
from urllib.parse import urlsplit

from localapi import structured
from localapi.config import MODELS, LocalAPIConfig, check_script_entry
from localapi.dialects import ApiError, analyse_videos, invalid, parse_request
from localapi.http import Reply, authorize, duration_text, fault_reply, rate_limited
from localapi.luma import LumaService
from localapi.media import ceil_tokens

BANNER = "[localapi offline provider]"
WINDOW_S = 60.0
LAST_REQUESTS = 50
ROUTES = (
    (re.compile(r"/v1/chat/completions"), "openai"),
    (re.compile(r"/trinity/v1/chat/completions"), "trinity"),
    (re.compile(r"/v1/projects/[^/]+/locations/[^/]+/chat/completions"), "gdc"),
)


class _Stats(TypedDict):
    requests: int
    by_status: Counter[str]  # keyed by the status code as text
    by_dialect: Counter[str]
    ok: int
    in_flight: int
    in_flight_max: int
    dropped: int
    faults: Counter[str]
    keys: Counter[str]  # X-Request-Key (first 200 characters) of each well-formed 200 answer
    timeline: list[list[float]]  # [time, status, prompt tokens] per answer
    admitted: list[list[float]]  # [time, prompt tokens] of each request counted in the rate-limit window


class LocalAPI:
    """The offline chat/completions provider, served from a background thread."""

    def __init__(self, config: LocalAPIConfig | None = None, host: str = "127.0.0.1", port: int = 0, *,
                 log: bool = False):
        self.config = config if config is not None else LocalAPIConfig()
        self.host, self.port, self.log = host, port, log
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._in_flight = 0
        self.luma = LumaService(self)  # the Luma-style generation endpoints (the Luma generation task API)
        self._clear()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> LocalAPI:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is None:
            self.stopping.clear()
            self._server = _Server((self.host, self.port), self)
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                            name=f"localapi-{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; stalls and latency sleeps in progress end at once."""
        if self._server is not None:
            self.stopping.set()
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None  # start() sets _thread together with _server
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> LocalAPI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset(self) -> None:
        """Clear stats, the script and the rate-limit windows; re-seed the fault draws."""
        with self._lock:
            self.config.script.clear()
        self._clear()
        self.luma.reset()

    def _clear(self) -> None:
        with self._lock:
            self._window: deque[tuple[float, int]] = deque()  # (time, prompt tokens) of accepted requests
            self._quota_used = 0
            self._rng, self._rng_seed = random.Random(self.config.seed), self.config.seed
            self._next_id = 1
            self._last: deque[dict] = deque(maxlen=LAST_REQUESTS)
            self._stats: _Stats = {
                "requests": 0, "by_status": Counter(), "by_dialect": Counter(), "ok": 0, "in_flight": self._in_flight,
                "in_flight_max": self._in_flight, "dropped": 0, "faults": Counter(), "keys": Counter(), "timeline": [],
                "admitted": [],  # [time, prompt tokens] of each request counted in the rate-limit window
            }

    def stats(self) -> dict:
        """A JSON-able snapshot, equal to GET /_localapi/stats (so status codes are string keys).

        `ok` and `keys` count well-formed 200 answers only (not the "malformed" fault); `in_flight_max` counts
        every chat request from arrival, also those then refused.
        """
        with self._lock:
            out: dict[str, Any] = dict(copy.deepcopy(self._stats))
            out["last_requests"] = copy.deepcopy(list(self._last))
            out["in_flight"] = self._in_flight
        for key in ("by_status", "by_dialect", "faults", "keys"):
            out[key] = {str(k): v for k, v in out[key].items()}
        return out

    # -- requests ---------------------------------------------------------------------------------

    def _respond(self, method: str, path: str, headers, body: bytes) -> Reply:
        if self.luma.handles(path):
            return self.luma.respond(method, path, headers, body)
        if method == "GET":
            if path in ("/v1/models", "/trinity/v1/models"):
                return Reply.json(200, {"object": "list", "data": [
                    {"id": m, "object": "model", "owned_by": "localapi", "inputModalities": list(mods)}
                    for m, mods in MODELS.items()]})
            if path == "/_localapi/stats":
                return Reply.json(200, self.stats())
        elif path == "/_localapi/reset":
            self.reset()
            return Reply.json(200, {"reset": True})
        elif path == "/_localapi/config":
            return self._configure(body)
        else:
            dialect = next((d for pattern, d in ROUTES if pattern.fullmatch(path)), None)
            if dialect is not None:
                return self._chat(dialect, path, headers, body)
        return Reply.json(404, {"error": {"message": f"localapi has no route {method} {path[:100]}", "type":
                                          "invalid_request_error", "param": None, "code": "not_found"}})

    def _configure(self, body: bytes) -> Reply:
        try:
            changes = json.loads(body or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object of LocalAPIConfig fields")
            new = self.config.updated(changes)
        except (ValueError, TypeError) as exc:
            return Reply.error(invalid(str(exc), None, "invalid_config"))
        with self._lock:
            for name in changes:
                setattr(self.config, name, getattr(new, name))
            if "seed" in changes:
                self._rng, self._rng_seed = random.Random(new.seed), new.seed
        return Reply.json(200, {"config": self.config.public()})

    def _chat(self, dialect: str, path: str, headers, body: bytes) -> Reply:
        summary = {"dialect": dialect, "path": path}
        with self._lock:
            self._in_flight += 1
            arrived_with = self._in_flight
            self._stats["in_flight_max"] = max(self._stats["in_flight_max"], arrived_with)
            self._stats["requests"] += 1
            self._stats["by_dialect"][dialect] += 1
        tokens, ok, fault, limit_headers = 0, False, "ok", {}
        try:
            cfg = self.config
            authorize(headers, cfg)
            if cfg.daily_quota is not None and self._quota_used >= cfg.daily_quota:
                raise ApiError(429, f"You exceeded your current quota of {cfg.daily_quota} requests per day "
                               "(localapi daily_quota).", type="insufficient_quota", code="insufficient_quota")
            if cfg.concurrency is not None and arrived_with > cfg.concurrency:
                raise rate_limited(cfg.retry_after_s, f"{cfg.concurrency} concurrent requests", cfg)
            with self._lock:
                now = time.time()
                wait = self._wait(now, None, cfg)
                limit_headers = self._limit_headers(now, cfg) if wait > 0 else {}
            if wait > 0:
                raise rate_limited(wait, f"{cfg.rpm} requests per minute", cfg, limit_headers)
            try:
                request = json.loads(body)
            except ValueError as exc:
                raise invalid(f"the body is not valid JSON: {exc}", None, "invalid_json") from None
            wanted = structured.requested(request, summary)  # a JSON schema to fill, or None
            parsed = parse_request(dialect, request, cfg, summary, text_only=wanted is not None)
            facts = analyse_videos(parsed, dialect, cfg)
            prompt = parsed.text_tokens + sum(f.tokens(cfg.frame_tokens) for f in facts)
            audio = sum(f.audio_tokens() for f in facts)
            split = {"text_tokens": parsed.text_tokens, "video_tokens": prompt - parsed.text_tokens - audio,
                     "audio_tokens": audio}
            limit_headers = self.admit(prompt, cfg)
            tokens = prompt
            fault = self.next_fault(cfg)
            self.stopping.wait(random.uniform(*cfg.latency))
            reply = fault_reply(fault, cfg)
            if reply is None:
                if fault == "stall":
                    self.stopping.wait(cfg.stall_s)
                if wanted:
                    text = structured.answer(wanted, request, facts, fault == "badjson")
                else:  # one VideoFacts per video, in order
                    described = (f.describe(r.index, r.label) for r, f in zip(parsed.videos, facts, strict=True))
                    text = f"{BANNER} " + " ".join(described)
                reply = Reply.json(200, self._completion(parsed.model, text, prompt, split, cfg))
                if fault == "malformed":
                    reply.body = reply.body[: len(reply.body) // 2]
                ok = fault != "malformed"
        except ApiError as exc:
            reply = Reply.error(exc)
        except Exception as exc:  # a localapi bug: answer 500 rather than drop the connection
            traceback.print_exc()
            reply = Reply.error(ApiError(500, f"localapi internal error ({type(exc).__name__})", type="server_error",
                                         code="localapi_error"))
        except BaseException:
            with self._lock:
                self._in_flight -= 1
            raise
        for name, value in limit_headers.items():
            reply.headers.setdefault(name, value)
        try:
            self._record(summary, reply, tokens, ok, fault, headers.get("X-Request-Key"))
        finally:  # recorded first: a request that is no longer in flight is in the stats
            with self._lock:
                self._in_flight -= 1
        return reply

    def _wait(self, now: float, tokens: int | None, cfg: LocalAPIConfig) -> float:
        """Seconds until the windows admit a request of `tokens` (None: check rpm only); call under the lock."""
        window = self._window
        while window and window[0][0] <= now - WINDOW_S:
            window.popleft()
        wait = 0.0
        if cfg.rpm is not None and len(window) >= cfg.rpm:
            wait = window[len(window) - cfg.rpm][0] + WINDOW_S - now
        if tokens is not None and cfg.tpm is not None:
            excess = sum(t for _, t in window) + tokens - cfg.tpm
            for stamp, spent in window:
                if excess <= 0:
                    break
                excess -= spent
                wait = max(wait, stamp + WINDOW_S - now)
        return wait

    def admit(self, tokens: int, cfg: LocalAPIConfig) -> dict:
        """Count an accepted request in the windows and return its x-ratelimit-* headers, or raise 429
        (413 when it alone exceeds tpm)."""
        if cfg.tpm is not None and tokens > cfg.tpm:
            raise ApiError(413, f"the request needs {tokens} prompt tokens, more than the limit of {cfg.tpm} tokens "
                           "per minute: send fewer or shorter videos", code="request_too_large")
        with self._lock:
            now = time.time()
            wait = self._wait(now, tokens, cfg)
            if wait <= 0:
                self._window.append((now, tokens))
                self._quota_used += 1
                self._stats["admitted"].append([round(now, 4), tokens])
                return self._limit_headers(now, cfg)
            rpm_full = cfg.rpm is not None and len(self._window) >= cfg.rpm
            limit_headers = self._limit_headers(now, cfg)
        raise rate_limited(wait, f"{cfg.rpm} requests per minute" if rpm_full else f"{cfg.tpm} tokens per minute",
                                 cfg, limit_headers)

    def _limit_headers(self, now: float, cfg: LocalAPIConfig) -> dict:
        """OpenAI-style x-ratelimit-* headers for the window as it is; reset is when it is empty again; under the
        lock."""
        if not cfg.ratelimit_headers or (cfg.rpm is None and cfg.tpm is None):
            return {}
        reset = duration_text(self._window[-1][0] + WINDOW_S - now if self._window else 0.0)
        out = {}
        if cfg.rpm is not None:
            out.update({"x-ratelimit-limit-requests": str(cfg.rpm), "x-ratelimit-reset-requests": reset,
                        "x-ratelimit-remaining-requests": str(max(0, cfg.rpm - len(self._window)))})
        if cfg.tpm is not None:
            used = sum(t for _, t in self._window)
            out.update({"x-ratelimit-limit-tokens": str(cfg.tpm), "x-ratelimit-reset-tokens": reset,
                        "x-ratelimit-remaining-tokens": str(max(0, cfg.tpm - used))})
        return out

    def next_fault(self, cfg: LocalAPIConfig) -> str:
        """The next script entry, else a draw from cfg.faults, else "ok"."""
        with self._lock:
            if cfg.script:
                try:
                    return check_script_entry(cfg.script.pop(0))
                except ValueError as exc:
                    raise ApiError(500, f"localapi script: {exc}", type="localapi_config_error",
                                   code="bad_script_entry") from None
            if not cfg.faults:
                return "ok"
            if self._rng_seed != cfg.seed:
                self._rng, self._rng_seed = random.Random(cfg.seed), cfg.seed
            draw = self._rng.random()
        for kind, p in cfg.faults.items():
            if draw < p:
                return kind
            draw -= p
        return "ok"

    def _completion(self, model: str, text: str, prompt: int, split: dict | None = None,
                    cfg: LocalAPIConfig | None = None) -> dict:
        """A chat.completion whose usage counts the prompt by modality (prompt_tokens_details, as OpenAI-style
        gateways report it) and, with cost_per_million, carries the gateway's own `cost`."""
        with self._lock:
            n, self._next_id = self._next_id, self._next_id + 1
        completion = ceil_tokens(text)
        usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                                 "total_tokens": prompt + completion}
        if split is not None:
            usage["prompt_tokens_details"] = {**split, "cached_tokens": 0}
            usage["completion_tokens_details"] = {"reasoning_tokens": 0}
            prices = cfg.cost_per_million if cfg is not None else None
            if prices is not None:
                counts = {"text": split["text_tokens"], "video": split["video_tokens"], "audio": split["audio_tokens"],
                          "output": completion}
                usage["cost"] = float(sum(Decimal(counts[k]) * Decimal(str(v)) for k, v in prices.items())
                                      / Decimal(1_000_000))
        return {
            "id": f"chatcmpl-localapi-{n}", "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": "localapi-offline",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage,
        }

    def _record(self, summary: dict, reply: Reply, tokens: int, ok: bool, fault: str, key: str | None) -> None:
        summary["status"] = "drop" if reply.drop else reply.status
        with self._lock:
            stats = self._stats
            if reply.drop:
                stats["dropped"] += 1
            else:
                stats["by_status"][str(reply.status)] += 1
                stats["timeline"].append([round(time.time(), 3), reply.status, tokens])
            if ok:
                stats["ok"] += 1
                if key:
                    stats["keys"][key[:200]] += 1
            if fault != "ok":
                stats["faults"][fault] += 1
            self._last.append(summary)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, api: LocalAPI):
        self.api = api
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "localapi-offline"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: _Server

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            return self._send(Reply.error(ApiError(411, "send the body with a Content-Length", code="length_required")))
        try:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        except (ValueError, OSError):
            self.close_connection = True
            return None
        path = urlsplit(self.path).path
        self._send(self.server.api._respond(self.command, path, self.headers, body))

    def _send(self, reply: Reply) -> None:
        try:
            if reply.drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:  # the client went away
            self.close_connection = True

    def log_request(self, code="-", size="-") -> None:
        if self.server.api.log:  # method, path without query, status: never headers or bodies
            print(f"localapi {self.command} {urlsplit(self.path).path} {code}", file=sys.stderr, flush=True)

    def log_message(self, format, *args) -> None:  # silence http.server's default lines (they echo request lines)
        pass


def main(argv: list[str] | None = None) -> int:
    """Serve localapi in the foreground until interrupted (`python -m localapi`, `vidbatch localapi`)."""
    parser = argparse.ArgumentParser(
        prog="localapi", description="Serve localapi, the OFFLINE chat/completions provider: no model behind it, "
        "its answers state facts decoded from the videos (openai, trinity and gdc dialects).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (default 8765)")
    parser.add_argument("--rpm", type=int, help="requests per minute (429 with Retry-After over it)")
    parser.add_argument("--tpm", type=int, help="prompt tokens per minute")
    parser.add_argument("--concurrency", type=int, help="requests in flight")
    parser.add_argument("--latency", type=float, nargs=2, metavar=("MIN", "MAX"), default=(0.0, 0.0),
                        help="seconds of uniform random latency")
    parser.add_argument("--fault", action="append", default=[], metavar="KIND=P",
                        help="inject a fault with probability P: 429 500 502 502html 503 504 drop stall malformed "
                        "400 401 badjson")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    parser.add_argument("--api-key-env", metavar="VAR",
                        help="require this environment variable's value as bearer token")
    parser.add_argument("--storage-endpoint", metavar="URL",
                        help="S3-compatible storage whose objects gdc requests may name (s3:// or presigned URLs)")
    parser.add_argument("--frame-tokens", type=int, default=258, help="tokens per sampled frame (258; 66 or 70 for "
                        "low media resolution or newer models)")
    parser.add_argument("--retry-after-in", choices=("header", "body", "both"), default="header",
                        help="where a 429 says how long to wait: Retry-After header, google.rpc.RetryInfo in the body, "
                        "or both")
    parser.add_argument("--daily-quota", type=int, metavar="N", help="after N accepted requests every chat request "
                        "answers 429 insufficient_quota")
    parser.add_argument("--luma-step", type=float, default=2.0, metavar="SECONDS",
                        help="how long each in-progress state of a /luma/generations task lasts (default 2)")
    parser.add_argument("--luma-failure-rate", type=float, default=0.0, metavar="P",
                        help="share of /luma/generations tasks that end failed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="do not log one line per request")
    args = parser.parse_args(argv)
    faults = {}
    for item in args.fault:
        kind, _, p = item.partition("=")
        try:
            faults[kind] = float(p)
        except ValueError:
            parser.error(f"--fault takes KIND=P with P a probability such as 0.1, got {item!r}")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            parser.error(f"--api-key-env: the environment variable {args.api_key_env} is not set")
    try:
        config = LocalAPIConfig(rpm=args.rpm, tpm=args.tpm, concurrency=args.concurrency, latency=tuple(args.latency),
                                faults=faults, seed=args.seed, api_key=api_key, frame_tokens=args.frame_tokens,
                                storage_endpoint=args.storage_endpoint, retry_after_in=args.retry_after_in,
                                daily_quota=args.daily_quota)
    except ValueError as exc:
        parser.error(str(exc))
    api = LocalAPI(config, args.host, args.port, log=not args.quiet)
    try:
        api.luma.configure({"step_s": args.luma_step, "failure_rate": args.luma_failure_rate})
    except ValueError as exc:
        parser.error(str(exc))
    try:
        api.start()
    except OSError as exc:
        print(f"localapi: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    limits = ", ".join(f"{k}={v}" for k, v in (("rpm", args.rpm), ("tpm", args.tpm), ("concurrency", args.concurrency))
                       if v is not None) or "none"
    print(f"localapi: OFFLINE provider (no real model; answers describe the decoded videos) serving {api.url}\n"
          f"  openai  POST {api.url}/v1/chat/completions\n"
          f"  trinity POST {api.url}/trinity/v1/chat/completions\n"
          f"  gdc     POST {api.url}/v1/projects/PROJECT/locations/LOCATION/chat/completions\n"
          f"  luma    POST {api.url}/luma/generations, GET {api.url}/luma/generations/ID\n"
          f"  limits: {limits}; faults: {faults or 'none'}; auth: "
          f"{f'bearer token from ${args.api_key_env}' if api_key else 'any bearer token'}\n"
          "  Ctrl-C stops it.", flush=True)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        api.stop()
        print("localapi: stopped", flush=True)
    return 0


def _interrupt(*_) -> None:
    raise KeyboardInterrupt
