"""A source's declared directory layout (`{camera}/{date:%Y/%m/%d}/`): which directories a time window can hold.

A layout is a template of path segments below `source.url`:

- a literal segment (`videos`),
- a named wildcard, one segment: `{camera}` (any name) or `{camera:cam*}` (names matching a glob),
- the date, once, as strftime directives that may span segments: `{date:%Y/%m/%d}`, `{date:%Y-%m-%d}`,
  `day={date:%Y%m%d}` or `{date:%Y/%m/%d/%H}` (directives %Y %m %d %H, coarse to fine).

The directories the template names are its leaves: every object at any depth below a leaf fits the layout;
an object or directory elsewhere does not (it is counted and reported, never dropped without a word). Given a
time window, the date segments are not listed at all: the directories of each day (or hour) in the window are
named directly, so a night lists the directories of its window, not the archive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

from tasks.errors import ConfigError

_DIRECTIVES = {"Y": (r"\d{4}", 0), "m": (r"\d{2}", 1), "d": (r"\d{2}", 2), "H": (r"\d{2}", 3)}
_STEPS = [None, None, timedelta(days=1), timedelta(hours=1)]  # period of the finest directive (month, year: by hand)
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]*))?\}")


@dataclass(frozen=True)
class Segment:
    """One path segment of a layout: a literal, a glob (from a named wildcard) or a date format."""

    text: str              # as written in the template, the date field expanded to its format
    kind: str              # "literal" | "glob" | "date"
    pattern: re.Pattern    # what a directory name at this level must match

    def fits(self, name: str) -> bool:
        return self.pattern.fullmatch(name) is not None


def _glob_part(glob: str) -> str:
    out = []
    for c in glob:
        out.append("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c))
    return "".join(out)


def _date_part(fmt: str, template: str) -> tuple[str, list[int]]:
    out, levels, i = [], [], 0
    while i < len(fmt):
        if fmt[i] == "%":
            d = fmt[i + 1 : i + 2]
            if d not in _DIRECTIVES:
                raise ConfigError(f"source.layout {template!r}: date directive %{d} is not one of %Y %m %d %H")
            out.append(_DIRECTIVES[d][0])
            levels.append(_DIRECTIVES[d][1])
            i += 2
        else:
            out.append(re.escape(fmt[i]))
            i += 1
    return "".join(out), levels


@dataclass(frozen=True)
class Layout:
    template: str
    segments: tuple[Segment, ...]
    finest: int | None     # 0 year, 1 month, 2 day, 3 hour; None: the layout has no date

    @property
    def depth(self) -> int:
        return len(self.segments)

    @cached_property
    def regex(self) -> re.Pattern:
        """A relative path that fits: its leading directories match the segments, the object lies below them."""
        return re.compile("/".join(s.pattern.pattern for s in self.segments) + r"/.+")

    def fits(self, rel: str) -> bool:
        return self.regex.fullmatch(rel) is not None

    def fits_prefix(self, prefix: str) -> bool:
        """Whether a prefix below the source (`cam01`, `cam01/2026/11`) names directories of this layout."""
        parts = [p for p in prefix.strip("/").split("/") if p]
        return all(seg.fits(p) for seg, p in zip(self.segments, parts, strict=False))

    def date_values(self, since: datetime, until: datetime) -> list[tuple[str, ...]]:
        """The date segments' texts for every period of the finest directive that meets [since, until), in order."""
        if self.finest is None:
            return []
        start = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        if self.finest <= 2:
            start = start.replace(hour=0)
        if self.finest <= 1:
            start = start.replace(day=1)
        if self.finest == 0:
            start = start.replace(month=1)
        out: list[tuple[str, ...]] = []
        at = start
        dated = [s for s in self.segments if s.kind == "date"]
        while at < until:
            value = tuple(at.strftime(s.text) for s in dated)
            if not out or out[-1] != value:
                out.append(value)
            at = _next_period(at, self.finest)
        return out


def _next_period(at: datetime, finest: int) -> datetime:
    step = _STEPS[finest]
    if step is not None:
        return at + step
    if finest == 1:
        return at.replace(year=at.year + (at.month == 12), month=at.month % 12 + 1)
    return at.replace(year=at.year + 1)


def parse_layout(template: str) -> Layout:
    """The layout a template declares; a ConfigError naming the template when it does not parse."""
    if not template or not template.strip("/"):
        raise ConfigError(f"source.layout {template!r}: empty; give segments such as '{{camera}}/{{date:%Y/%m/%d}}/'")
    dates = [m for m in _FIELD.finditer(template) if m.group(1) == "date"]
    if len(dates) > 1:
        raise ConfigError(f"source.layout {template!r}: the date appears more than once")
    expanded = template
    if dates:
        fmt = dates[0].group(2)
        if not fmt:
            raise ConfigError(f"source.layout {template!r}: {{date}} needs a format, e.g. {{date:%Y/%m/%d}}")
        expanded = template[: dates[0].start()] + fmt + template[dates[0].end():]
    parts = expanded.strip("/").split("/")
    segments, levels = [], []
    for part in parts:
        if not part:
            raise ConfigError(f"source.layout {template!r}: an empty segment ('//')")
        rest = _FIELD.sub("", part)
        if "{" in rest or "}" in rest:
            raise ConfigError(f"source.layout {template!r}: unbalanced or misplaced brace in segment {part!r}")
        if "%" in part:
            if _FIELD.search(part):
                raise ConfigError(f"source.layout {template!r}: segment {part!r} mixes the date with a wildcard")
            regex, got = _date_part(part, template)
            levels += got
            segments.append(Segment(part, "date", re.compile(regex)))
        elif _FIELD.search(part):
            pieces, last = [], 0
            for m in _FIELD.finditer(part):
                pieces.append(re.escape(part[last : m.start()]))
                pieces.append(_glob_part(m.group(2)) if m.group(2) else "[^/]+")
                last = m.end()
            pieces.append(re.escape(part[last:]))
            segments.append(Segment(part, "glob", re.compile("".join(pieces))))
        else:
            segments.append(Segment(part, "literal", re.compile(re.escape(part))))
    if levels and levels != list(range(len(levels))):
        raise ConfigError(f"source.layout {template!r}: the date needs %Y, %m, %d, %H in this order, each once, "
                          "down to its finest (e.g. %Y/%m/%d), so that a window names its directories")
    return Layout(template, tuple(segments), levels[-1] if levels else None)
