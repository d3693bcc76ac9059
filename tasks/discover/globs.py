"""The glob dialect of source.include and source.exclude: `**` any depth, `*` and `?` within a segment."""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern:
    """Translate a glob (`**` any depth, `*` and `?` within one path segment, `[..]` sets) to a regex."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
                i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matches(rel: str, patterns: list[str]) -> bool:
    """True when the relative path, or its file name for a pattern with no slash, matches a glob."""
    name = rel.rsplit("/", 1)[-1]
    return any(glob_regex(p).match(rel if "/" in p else name) for p in patterns)
