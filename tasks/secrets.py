"""The secrets vidbatch holds (API keys, command tokens, storage credentials), redacted by value wherever text goes.

`hold` registers a value; `scrub` replaces every held value in a text. The first `hold` also installs a log record
factory that scrubs each record's message (and its traceback text), so no log line of the process carries one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

T = TypeVar("T")
REDACTED = "<redacted>"
MIN_LENGTH = 8  # shorter values are not real credentials, and replacing them (a "test" key) would garble messages

SECRET_KEYS = frozenset({"key", "secret", "token", "password", "passwd", "api_key", "apikey", "access_token",
                         "authorization", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
                         "session_token", "secret_access_key", "access_key_id", "client_secret", "private_key",
                         "credentials", "x-api-key", "x-goog-api-key"})
"""Option and body keys whose values are credentials (lower case)."""

_held: set[str] = set()
_ordered: list[str] = []  # longest first: a secret containing another is replaced whole
_lock = threading.Lock()
_installed = False


def is_secret_key(name: str) -> bool:
    return name.lower().replace("-", "_") in SECRET_KEYS or name.lower() in SECRET_KEYS


def hold(*values: Any) -> None:
    """Register values (str; others ignored) as secrets; the URL-quoted form is held too."""
    global _ordered
    from urllib.parse import quote

    new = set()
    for v in values:
        if isinstance(v, str) and len(v.strip()) >= MIN_LENGTH:
            for form in (v, v.strip(), quote(v, safe=""), unquote(v)):
                if len(form) >= MIN_LENGTH and form not in _held:
                    new.add(form)
    if not new:
        return
    with _lock:
        _held.update(new)
        _ordered = sorted(_held, key=len, reverse=True)
    _install_log_scrubber()


def hold_options(options: Mapping[str, Any]) -> None:
    """Hold the credential values of storage options (nested mappings too: client_kwargs, config_kwargs)."""
    for k, v in options.items():
        if isinstance(v, Mapping):
            hold_options(v)
        elif is_secret_key(str(k)):
            hold(v)


def hold_url(url: str | None) -> None:
    """Hold the user and password of a URL's `user:password@host` part."""
    if not url or "@" not in url:
        return
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    hold(parts.username, parts.password)


def strip_userinfo(url: str) -> str:
    """The URL without its `user:password@` part (what may be shown, logged or stored)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return scrub(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=host).geturl()


def scrub(text: T) -> T:
    """The text with every held secret replaced by <redacted> (anything not a str is returned as it is)."""
    if not _ordered or not isinstance(text, str):
        return text
    for secret in _ordered:
        if secret in text:
            text = text.replace(secret, REDACTED)  # type: ignore[assignment]  # a str stays a str
    return text


def redact_keys(value: Any) -> Any:
    """A JSON-like value with the values of credential-named keys replaced (`extra_body: {api_key: ...}`)."""
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_key(str(k)) and v not in (None, "") else redact_keys(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact_keys(v) for v in value]
    return scrub(value) if isinstance(value, str) else value


def held() -> int:
    """How many values are held (for tests and diagnostics, never the values)."""
    return len(_held)


def _install_log_scrubber() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the logger's business; leave the record as it is
            return record
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None and _ordered:
            text = logging.Formatter().formatException(record.exc_info)
            clean = scrub(text)
            if clean != text:
                record.exc_text = clean
        return record

    logging.setLogRecordFactory(factory)
