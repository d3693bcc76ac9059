"""The localapi configuration: limits, faults, the model registry and the dialects' constants."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

# Script entries and fault kinds (a fault is any script entry but "ok").
SCRIPT_KINDS = ("ok", "429", "500", "502", "502html", "503", "504", "drop", "stall", "malformed", "400", "401",
                "badjson")  # badjson: a structured answer that breaks its JSON schema (valid JSON, wrong shape)
FAULT_KINDS = SCRIPT_KINDS[1:]
COST_KINDS = ("text", "video", "audio", "output")  # what cost_per_million prices
RETRY_AFTER_FORMATS = ("seconds", "http-date")
RETRY_AFTER_PLACES = ("header", "body", "both")  # Retry-After header, google.rpc.RetryInfo in the body, or both

# model id -> input modalities, as GET /v1/models lists them
MODELS: dict[str, tuple[str, ...]] = {
    "google/gemini-2.5-flash": ("text", "video"),
    "gemini-2.5-flash": ("text", "video"),
    "localapi/video-1": ("text", "video"),
    "gpt-4o": ("text", "video"),
    "localapi/text-only": ("text",),
}

# Fields POST /_localapi/config may change; the others (api_key, storage) are fixed at start.
UPDATABLE = frozenset(
    {"rpm", "tpm", "concurrency", "latency", "faults", "script", "seed", "frame_tokens", "stall_s",
     "retry_after_format", "retry_after_s", "max_file_bytes", "gdc_max_seconds_audio",
     "gdc_max_seconds_silent", "gdc_max_videos", "retry_after_in", "ratelimit_headers", "daily_quota",
     "cost_per_million", "echo_key"}
)


@dataclass
class LocalAPIConfig:
    """What the offline provider enforces and injects; validated at construction."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    latency: tuple[float, float] = (0.0, 0.0)
    faults: dict[str, float] = field(default_factory=dict)
    script: list[str] = field(default_factory=list)
    seed: int = 0
    api_key: str | None = field(default=None, repr=False)
    frame_tokens: int = 258
    storage_options: dict = field(default_factory=dict, repr=False)
    storage_endpoint: str | None = None
    stall_s: float = 30.0
    retry_after_format: str = "seconds"
    max_file_bytes: int = 70 * 1024 * 1024
    retry_after_s: float = 1.0
    gdc_max_seconds_audio: float = 100.0
    gdc_max_seconds_silent: float = 120.0
    gdc_max_videos: int = 10
    retry_after_in: str = "header"
    ratelimit_headers: bool = True  # x-ratelimit-limit/-remaining/-reset-requests (and -tokens) when limits are set
    echo_key: bool = False  # a 401 for a wrong key says "Incorrect API key provided: <key>", as OpenAI's does
    daily_quota: int | None = None  # accepted requests before every chat request answers 429 insufficient_quota
    # as a gateway does (OpenRouter's usage.cost): prices per million tokens of text, video, audio and output, and
    # every answer's usage carries `cost`; None: no cost field
    cost_per_million: dict[str, float] | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "concurrency"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None (no limit), got {value!r}")
        lat = tuple(self.latency)
        if len(lat) != 2 or not all(_is_num(x) and x >= 0 for x in lat) or lat[0] > lat[1]:
            raise ValueError(f"latency must be (min, max) seconds with 0 <= min <= max, got {self.latency!r}")
        self.latency = (float(lat[0]), float(lat[1]))
        self.faults = dict(self.faults)
        for kind, p in self.faults.items():
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {kind!r}; allowed: {', '.join(FAULT_KINDS)}")
            if not _is_num(p) or not 0 <= p <= 1:
                raise ValueError(f"fault probability for {kind!r} must be within [0, 1], got {p!r}")
        if sum(self.faults.values()) > 1 + 1e-9:
            raise ValueError(f"fault probabilities add up to {sum(self.faults.values()):g}; keep the sum <= 1")
        self.script = [check_script_entry(e) for e in self.script]
        if self.retry_after_in not in RETRY_AFTER_PLACES:
            raise ValueError(f"retry_after_in must be one of {RETRY_AFTER_PLACES}, got {self.retry_after_in!r}")
        if not isinstance(self.ratelimit_headers, bool):
            raise ValueError(f"ratelimit_headers must be true or false, got {self.ratelimit_headers!r}")
        if self.daily_quota is not None and (not _is_int(self.daily_quota) or self.daily_quota < 0):
            raise ValueError(f"daily_quota must be a non-negative integer or None (no quota), got {self.daily_quota!r}")
        if self.cost_per_million is not None:
            prices = dict(self.cost_per_million)
            if set(prices) - set(COST_KINDS) or not all(_is_num(v) and v >= 0 for v in prices.values()):
                raise ValueError(f"cost_per_million must map {', '.join(COST_KINDS)} to prices >= 0, got {prices!r}")
            self.cost_per_million = prices
        if self.retry_after_format not in RETRY_AFTER_FORMATS:
            raise ValueError(f"retry_after_format must be one of {RETRY_AFTER_FORMATS}, "
                             f"got {self.retry_after_format!r}")
        if not _is_int(self.seed):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        for name, low in (("frame_tokens", 0), ("gdc_max_videos", 1), ("max_file_bytes", 1)):
            if not _is_int(getattr(self, name)) or getattr(self, name) < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {getattr(self, name)!r}")
        for name in ("stall_s", "retry_after_s", "gdc_max_seconds_audio", "gdc_max_seconds_silent"):
            if not _is_num(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative number of seconds, got {getattr(self, name)!r}")

    def updated(self, changes: dict) -> LocalAPIConfig:
        """A validated copy with `changes` applied; only UPDATABLE fields may change."""
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}; updatable fields: {', '.join(sorted(UPDATABLE))}")
        return replace(self, **changes)

    def public(self) -> dict:
        """The settings as JSON, without the api key or storage credentials."""
        out = asdict(self)
        out.pop("api_key")
        out["storage_options"] = sorted(self.storage_options)
        out["latency"] = list(self.latency)
        return out


def check_script_entry(entry) -> str:
    """A script entry as its canonical string, or ValueError naming the allowed ones."""
    text = str(entry)
    if text not in SCRIPT_KINDS:
        raise ValueError(f"unknown script entry {text!r}; allowed: {', '.join(SCRIPT_KINDS)}")
    return text


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)

