"""Run configs (YAML) validated by pydantic; provider profiles merged from configs/providers/."""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from .errors import ConfigError

VIDEO_EXTENSIONS = ["mp4", "mpeg", "mpg", "mov", "avi", "flv", "webm", "wmv", "3gp"]
PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOCALAPI = "localapi"  # base_url that starts the embedded offline provider for the run
SECRET_OPTION_KEYS = {"key", "secret", "token", "password", "aws_access_key_id", "aws_secret_access_key",
                      "aws_session_token", "session_token"}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


class SourceConfig(_Strict):
    url: str = Field(min_length=1)
    storage_options: dict[str, Any] = Field(default_factory=dict)
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    extensions: list[str] = Field(default_factory=lambda: list(VIDEO_EXTENSIONS))
    since: datetime | None = None
    until: datetime | None = None

    _tz = field_validator("since", "until")(_utc)

    @field_validator("extensions")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [e.lower().lstrip(".") for e in v]


class Limits(_Strict):
    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    concurrency: PositiveInt = 8
    window: Literal["smooth", "sliding"] = "smooth"
    margin_s: float = Field(default=0.25, ge=0, le=30)
    ramp_s: float = Field(default=10.0, ge=0)
    shared: bool = False  # on a Prefect server, rpm/tpm are also held across workers (tasks/quota.py)


class MediaLimits(_Strict):
    """What one provider accepts per video and per request (None: no stated limit)."""

    max_seconds_audio: float | None = Field(default=None, gt=0)
    max_seconds_silent: float | None = Field(default=None, gt=0)
    max_bytes_per_video: int | None = Field(default=None, gt=0)
    max_videos_per_request: int = Field(default=1, ge=1)
    max_bytes_per_request: int | None = Field(default=None, gt=0)
    mime_types: list[str] | None = None  # as the dialect names them (video/mov for gdc, video/quicktime for trinity)

    def max_seconds(self, has_audio: bool) -> float | None:
        return self.max_seconds_audio if has_audio else self.max_seconds_silent


# The seeds' numbers: GDC (001/004) 100 s with audio, 120 s without, 10 videos, nine MIME types;
# Trinity (002) 70 MB per file and four MIME types; Lunos (000) four MIME types.
DIALECT_MEDIA_LIMITS: dict[str, dict[str, Any]] = {
    "gdc": {"max_seconds_audio": 100, "max_seconds_silent": 120, "max_videos_per_request": 10,
            "mime_types": ["video/avi", "video/x-flv", "video/mov", "video/mpeg", "video/mpg", "video/mp4",
                           "video/webm", "video/wmv", "video/3gpp"]},
    "trinity": {"max_bytes_per_video": 70 * 1024 * 1024,
                "mime_types": ["video/mp4", "video/mpeg", "video/quicktime", "video/webm"]},
    "openai": {"mime_types": ["video/mp4", "video/mpeg", "video/mov", "video/webm"]},
}


class ProviderConfig(_Strict):
    name: str = "provider"
    dialect: Literal["openai", "gdc", "trinity"]
    base_url: str = Field(min_length=1)
    model: str = Field(min_length=1)
    api_key_env: str | None = None
    token_command: str | None = None
    token_ttl_s: float = Field(default=3000, gt=0)
    project: str | None = None
    location: str | None = None
    delivery: Literal["inline", "presigned", "storage_uri", "public_url"] = "inline"
    public_base_url: str | None = None
    presign_expires_s: PositiveInt = 3600
    limits: Limits = Field(default_factory=Limits)
    timeout_s: float = Field(default=120, gt=0)
    connect_timeout_s: float = Field(default=10, gt=0)
    max_attempts: PositiveInt = 6
    max_retry_time_s: float = Field(default=600, gt=0)
    backoff_initial_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)
    retry_budget_ratio: float = Field(default=0.2, ge=0)
    retry_budget_min: int = Field(default=50, ge=0)
    breaker_failures: PositiveInt | None = 20
    breaker_window_s: float = Field(default=60.0, ge=0)
    quota_error_codes: list[str] = Field(default_factory=lambda: ["insufficient_quota"])
    frame_tokens: PositiveInt = 258
    structured_output: Literal["json_schema", "prompt"] = "json_schema"  # how a JSON schema is asked for
    media: MediaLimits = Field(default_factory=MediaLimits)
    extra_body: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _media_defaults(cls, data: Any) -> Any:
        """A profile's media limits start from its dialect's seed numbers; keys given override them."""
        if isinstance(data, dict) and data.get("dialect") in DIALECT_MEDIA_LIMITS:
            given = data.get("media") or {}
            if isinstance(given, dict):
                data = {**data, "media": {**DIALECT_MEDIA_LIMITS[data["dialect"]], **given}}
        return data

    @model_validator(mode="after")
    def _check(self) -> "ProviderConfig":
        if self.api_key_env and self.token_command:
            raise ValueError("set either api_key_env or token_command, not both")
        if self.dialect == "gdc" and not (self.project and self.location):
            raise ValueError("the gdc dialect needs project and location (they form the endpoint path)")
        if self.delivery == "public_url" and not self.public_base_url:
            raise ValueError("delivery public_url needs public_base_url (the URL prefix that serves the source)")
        return self

    @property
    def embedded(self) -> bool:
        """True when the run starts its own offline localapi."""
        return self.base_url == LOCALAPI


class PromptConfig(_Strict):
    system: str = ""
    user: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class OutputConfig(_Strict):
    url: str = Field(min_length=1)
    storage_options: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(default=200, ge=1, le=5000)
    flush_rows: int = Field(default=100, ge=1)
    flush_seconds: float = Field(default=30.0, gt=0)
    journal: bool = True
    watermark_overlap_s: float = Field(default=300.0, ge=0)


class PackConfig(_Strict):
    max_videos: int = Field(default=1, ge=1)  # > 1: several videos or segments share one request
    group_by: Literal["directory", "directory_hour", "none"] = "directory_hour"


class MediaConfig(_Strict):
    segment_target_s: float | None = Field(default=None, gt=0)  # default: the provider's limit less a margin
    segment_overlap_s: float = Field(default=0.0, ge=0)
    cut_mode: Literal["auto", "copy", "reencode"] = "auto"
    shrink: bool = True
    transcode: bool = True
    scratch_url: str | None = None  # cut/shrunk files for URL deliveries; default: <output.url>/_scratch
    scratch_storage_options: dict[str, Any] | None = None  # default: output.storage_options
    inflight_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    pack: PackConfig = Field(default_factory=PackConfig)


class RunConfig(_Strict):
    job: str = Field(default="summaries", pattern=r"^[A-Za-z0-9_.-]+$")
    source: SourceConfig
    provider: ProviderConfig
    prompt: PromptConfig
    output: OutputConfig
    media: MediaConfig = Field(default_factory=MediaConfig)

    @model_validator(mode="after")
    def _pack_fits(self) -> "RunConfig":
        limit = self.provider.media.max_videos_per_request
        if self.media.pack.max_videos > limit:
            raise ValueError(f"media.pack.max_videos {self.media.pack.max_videos} is over provider "
                             f"{self.provider.name!r}'s limit of {limit} videos per request")
        return self

    def scratch(self) -> tuple[str, dict[str, Any]]:
        """Where cut, shrunk or transcoded files go when they must be fetched by URL."""
        if self.media.scratch_url:
            opts = self.media.scratch_storage_options
            return self.media.scratch_url, self.output.storage_options if opts is None else opts
        return self.output.url.rstrip("/") + "/_scratch", self.output.storage_options


def _locate(loc: tuple) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return []
    return list(model.model_fields)


# top-level keys that belong to another command's config: named in the error when a run meets them
COMMAND_FOR_KEY = {"index": "vidbatch index", "prompts": "vidbatch generate", "images": "vidbatch generate",
                   "poll": "vidbatch generate"}


def _describe(exc: ValidationError, origin_of, model: type[BaseModel] | None = None) -> str:
    model = model or RunConfig
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = f"{origin_of(loc)}: {_locate(loc) or '(top level)'}"
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(model, loc))
            hint = COMMAND_FOR_KEY.get(loc[0]) if len(loc) == 1 else None
            lines.append(f"{where}: unknown key; allowed keys here: {allowed}"
                         + (f" (a config with `{loc[0]}:` is for `{hint}`)" if hint else ""))
        elif err["type"] == "missing":
            lines.append(f"{where}: required key is missing")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
            lines.append(f"{where}: {err['msg']}{shown}")
    return "invalid config:\n  " + "\n  ".join(lines)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(data).__name__}")
    return data


def find_profile(name: str, near: Path) -> Path:
    """The profile file for a name: next to the config, in ./configs/providers, or the project's own."""
    candidates = [near / "providers" / f"{name}.yaml", near / f"{name}.yaml",
                  Path.cwd() / "configs" / "providers" / f"{name}.yaml",
                  PROJECT_ROOT / "configs" / "providers" / f"{name}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    known = sorted({p.stem for d in (near / "providers", PROJECT_ROOT / "configs" / "providers") if d.is_dir()
                    for p in d.glob("*.yaml")})
    raise ConfigError(f"provider.profile: no profile named {name!r}; known profiles: {', '.join(known) or 'none'}")


def _expand_env(options: dict, where: str) -> dict:
    """Replace ${VAR} in string values from the environment; refuse literal credentials."""
    out: dict[str, Any] = {}
    for k, v in options.items():
        if isinstance(v, dict):
            out[k] = _expand_env(v, f"{where}.{k}")
            continue
        if k.lower() in SECRET_OPTION_KEYS and isinstance(v, str) and not _ENV_REF.fullmatch(v.strip()):
            raise ConfigError(f"{where}.{k}: credentials never go in config files; write \"${{ENV_VAR}}\" "
                              "or leave it out and set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
        if isinstance(v, str):
            def sub(m: re.Match) -> str:
                if m.group(1) not in os.environ:
                    raise ConfigError(f"{where}.{k}: environment variable {m.group(1)} is not set")
                return os.environ[m.group(1)]
            v = _ENV_REF.sub(sub, v)
        out[k] = v
    return out


def load_config(path: str | Path, overrides: dict | None = None, check_credentials: bool = True,
                model: type[RunConfig] | None = None) -> RunConfig:
    """Read, merge and validate a run config; raise ConfigError naming the file and key path."""
    path = Path(path)
    raw = _read_yaml(path)
    provider_raw = raw.get("provider")
    profile_path = None
    if isinstance(provider_raw, dict) and "profile" in provider_raw:
        provider_raw = dict(provider_raw)
        name = provider_raw.pop("profile")
        profile_path = find_profile(str(name), path.parent)
        merged = _read_yaml(profile_path)
        merged.setdefault("name", str(name))
        for k, v in provider_raw.items():
            merged[k] = {**merged[k], **v} if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
        raw = {**raw, "provider": merged}
    for key, value in (overrides or {}).items():
        section, _, leaf = key.partition(".")
        raw.setdefault(section, {})[leaf] = value

    own_provider_keys = set(provider_raw) if isinstance(provider_raw, dict) else set()

    def origin_of(loc: tuple) -> str:
        if profile_path and loc and loc[0] == "provider" and (len(loc) < 2 or loc[1] not in own_provider_keys):
            return f"{path} (provider profile {profile_path})"
        return str(path)

    try:
        cfg = (model or RunConfig).model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(e, origin_of, model)) from None
    src, out, prov = cfg.source, cfg.output, cfg.provider
    cfg = cfg.model_copy(update={
        "source": src.model_copy(update=_expand_env({"url": src.url, "storage_options": src.storage_options},
                                                    f"{path}: source")),
        "output": out.model_copy(update=_expand_env({"url": out.url, "storage_options": out.storage_options},
                                                    f"{path}: output")),
        "provider": prov.model_copy(update=_expand_env({"base_url": prov.base_url,
                                                        "public_base_url": prov.public_base_url}, f"{path}: provider")),
    })
    if check_credentials:
        check_provider_credentials(cfg.provider, str(path))
    return cfg


def check_provider_credentials(p: ProviderConfig, where: str = "config") -> None:
    """Fail before any call when the credential the provider needs is missing."""
    if p.embedded:
        return
    if p.api_key_env:
        if not os.environ.get(p.api_key_env):
            raise ConfigError(f"{where}: provider.api_key_env: environment variable {p.api_key_env} is not set "
                              f"or empty; export it with the API key of provider {p.name!r}")
    elif not p.token_command:
        raise ConfigError(f"{where}: provider: no credential configured; set api_key_env (the name of an "
                          "environment variable holding the key) or token_command (a command printing a token)")


def parse_when(value: str | datetime | None, name: str = "--since") -> datetime | None:
    """A date or ISO datetime (UTC unless it says otherwise)."""
    if value is None or isinstance(value, datetime):
        return _utc(value)
    try:
        return _utc(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
    except ValueError:
        raise ConfigError(f"{name} {value!r}: not a date; use YYYY-MM-DD or an ISO datetime") from None


# -- video generation (`vidbatch generate`, the Luma-style API of seed 003) --------------------------------

ASPECT_RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16")


def aspect_ratio_text(value: Any) -> Any:
    """An aspect ratio as text; YAML 1.1 reads an unquoted 16:9 as the base-60 integer 969, so turn it back."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 60:
        return f"{value // 60}:{value % 60}"
    return value.strip() if isinstance(value, str) else value


def check_aspect_ratio(value: Any) -> str | None:
    text = aspect_ratio_text(value)
    if text is not None and text not in ASPECT_RATIOS:
        read_as = f" ({text} unquoted reads in YAML as the number {value})" if text != value else ""
        raise ValueError(f"must be one of {', '.join(ASPECT_RATIOS)}{read_as}")
    return text


class GenerationProviderConfig(_Strict):
    name: str = "luma"
    base_url: str = Field(min_length=1)
    api_key_env: str | None = None
    token_command: str | None = None
    token_ttl_s: float = Field(default=3000, gt=0)
    limits: Limits = Field(default_factory=Limits)
    timeout_s: float = Field(default=60, gt=0)
    connect_timeout_s: float = Field(default=10, gt=0)
    max_attempts: PositiveInt = 6
    max_retry_time_s: float = Field(default=600, gt=0)
    backoff_initial_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "GenerationProviderConfig":
        if self.api_key_env and self.token_command:
            raise ValueError("set either api_key_env or token_command, not both")
        return self

    @property
    def embedded(self) -> bool:
        """True when the run starts its own offline localapi."""
        return self.base_url == LOCALAPI

    def client_config(self) -> ProviderConfig:
        """These settings as the ProviderConfig that Credentials, Limiter and retry_policy take.

        Its dialect and model are unused: generation calls ProviderClient.request, never send.
        """
        shared = self.model_dump(include={"name", "base_url", "api_key_env", "token_command", "token_ttl_s",
                                          "limits", "timeout_s", "connect_timeout_s", "max_attempts",
                                          "max_retry_time_s", "backoff_initial_s", "backoff_max_s"})
        return ProviderConfig(dialect="openai", model="luma-generations", **shared)


class PromptDefaults(_Strict):
    expand_prompt: bool | None = None
    loop: bool | None = None
    aspect_ratio: str | None = None
    notify_hook: str | None = None

    _ratio = field_validator("aspect_ratio", mode="before")(check_aspect_ratio)


class PromptListConfig(_Strict):
    url: str = Field(min_length=1)
    format: Literal["csv", "parquet", "yaml"] | None = None
    storage_options: dict[str, Any] = Field(default_factory=dict)
    defaults: PromptDefaults = Field(default_factory=PromptDefaults)


class ImagesConfig(_Strict):
    delivery: Literal["presigned", "inline"] = "presigned"
    storage_options: dict[str, Any] = Field(default_factory=dict)
    presign_expires_s: PositiveInt = 3600
    max_inline_bytes: PositiveInt = 10 * 2**20


class PollConfig(_Strict):
    interval_s: float = Field(default=5.0, gt=0)
    backoff: float = Field(default=1.5, ge=1)
    max_interval_s: float = Field(default=60.0, gt=0)
    deadline_s: float = Field(default=3600.0, gt=0)


class GenerateOutputConfig(_Strict):
    url: str = Field(min_length=1)
    storage_options: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(default=100, ge=1, le=5000)
    flush_seconds: float = Field(default=30.0, gt=0)

    @property
    def videos_url(self) -> str:
        return self.url.rstrip("/") + "/videos"

    @property
    def table_url(self) -> str:
        return self.url.rstrip("/") + "/generations"


class GenerateConfig(_Strict):
    job: str = Field(default="generations", pattern=r"^[A-Za-z0-9_.-]+$")
    prompts: PromptListConfig
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    provider: GenerationProviderConfig
    poll: PollConfig = Field(default_factory=PollConfig)
    output: GenerateOutputConfig
    summarize: str | None = None


def load_generate_config(path: str | Path, check_credentials: bool = True) -> GenerateConfig:
    """Read and validate a generation config; raise ConfigError naming the file and key path."""
    path = Path(path)
    try:
        cfg = GenerateConfig.model_validate(_read_yaml(path))
    except ValidationError as e:
        raise ConfigError(_describe(e, lambda loc: str(path), GenerateConfig)) from None
    pr, im, out = cfg.prompts, cfg.images, cfg.output
    cfg = cfg.model_copy(update={
        "prompts": pr.model_copy(update=_expand_env({"url": pr.url, "storage_options": pr.storage_options},
                                                    f"{path}: prompts")),
        "images": im.model_copy(update=_expand_env({"storage_options": im.storage_options}, f"{path}: images")),
        "output": out.model_copy(update=_expand_env({"url": out.url, "storage_options": out.storage_options},
                                                    f"{path}: output")),
        "provider": cfg.provider.model_copy(update=_expand_env({"base_url": cfg.provider.base_url},
                                                               f"{path}: provider")),
    })
    if check_credentials:
        check_provider_credentials(cfg.provider.client_config(), str(path))
    return cfg


# -- archive indexing (`vidbatch index`) ------------------------------------------------------------------

REDUCE_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["summary", "chapters"],
    "properties": {
        "summary": {"type": "string", "description": "a few sentences on the whole video"},
        "chapters": {"type": "array", "description": "the whole video's chapters, in order, covering its timeline",
                     "items": {"type": "object", "additionalProperties": False,
                               "required": ["start_s", "end_s", "title", "summary"],
                               "properties": {
                                   "start_s": {"type": "number", "description": "seconds from the video's start"},
                                   "end_s": {"type": "number", "description": "seconds from the video's start"},
                                   "title": {"type": "string"}, "summary": {"type": "string"}}}},
    },
}


class EntryMap(_Strict):
    """How the items of one array property of an answer become index entries (unset fields are guessed)."""

    kind: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")  # default: the property name, singular
    label: str | None = None       # item field holding the label; default: title, label, name, term, type ...
    text: str | None = None        # item field holding the text; default: description, summary, text ...
    confidence: str | None = None  # default: "confidence" when the items have it
    start: str = "start_s"
    end: str = "end_s"


def check_entry_schema(schema: dict[str, Any], entries: dict[str, EntryMap]) -> None:
    """ValueError unless `schema` is a JSON schema of an object whose `entries` properties are arrays of spans."""
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as e:
        raise ValueError(f"json_schema is not a valid JSON schema: {e.message}") from None
    props = schema.get("properties")
    if schema.get("type") != "object" or not isinstance(props, dict):
        raise ValueError("json_schema must describe an object (type: object) with properties")
    for name, rule in entries.items():
        items = (props.get(name) or {}).get("items") if isinstance(props.get(name), dict) else None
        if not isinstance(items, dict) or not isinstance(items.get("properties"), dict):
            raise ValueError(f"entries.{name}: json_schema needs a property {name!r} of type array whose items "
                             f"are objects (known properties: {', '.join(props)})")
        fields = items["properties"]
        for role in ("start", "end", "label", "text", "confidence"):
            field_name = getattr(rule, role)
            if field_name is not None and field_name not in fields:
                raise ValueError(f"entries.{name}.{role}: the items of {name!r} have no property {field_name!r} "
                                 f"(they have: {', '.join(fields)})")


class SummarySpec(_Strict):
    """The whole-video reduce call: a text-only request over a video's segment results."""

    enabled: bool = True
    system: str = "You write whole-video summaries and chapter lists from the indexes of a video's segments."
    user: str = Field(default="Summarize the whole video and list its chapters from its segment results below. "
                      "Join chapters that continue across segments. Times are seconds on the whole video's "
                      "timeline.", min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    schema_name: str = Field(default="video_summary", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    json_schema: dict[str, Any] = Field(default_factory=lambda: REDUCE_SCHEMA)
    entries: dict[str, EntryMap] = Field(default_factory=lambda: {
        "chapters": EntryMap(kind="chapter", label="title", text="summary")})
    summary_field: str | None = "summary"  # a string property that becomes the video's `summary` entry

    @model_validator(mode="after")
    def _check(self) -> "SummarySpec":
        check_entry_schema(self.json_schema, self.entries)
        if self.summary_field and self.summary_field not in self.json_schema["properties"]:
            raise ValueError(f"summary_field {self.summary_field!r} is not a property of json_schema")
        return self


class IndexSpec(_Strict):
    """What the index flow asks of each segment, how answers become entries, and the whole-video summary."""

    schema_name: str = Field(default="video_index", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    json_schema: dict[str, Any]
    entries: dict[str, EntryMap] = Field(min_length=1)
    merge_gap_s: float = Field(default=1.0, ge=0)  # like entries of two segments this close (or overlapping) merge
    summary: SummarySpec = Field(default_factory=SummarySpec)

    @model_validator(mode="after")
    def _check(self) -> "IndexSpec":
        check_entry_schema(self.json_schema, self.entries)
        return self


class IndexRunConfig(RunConfig):
    """A run config with an `index` section; output.url is a folder holding `ledger/` and `index/`."""

    index: IndexSpec


def load_index_config(path: str | Path, check_credentials: bool = True) -> IndexRunConfig:
    """Read and validate an index config; raise ConfigError naming the file and key path."""
    return load_config(path, check_credentials=check_credentials, model=IndexRunConfig)
