"""localapi: the OFFLINE chat/completions provider (openai, trinity and gdc dialects) for tests, demo and benchmarks."""

from localapi.config import LocalAPIConfig
from localapi.server import LocalAPI, main

__all__ = ["LocalAPI", "LocalAPIConfig", "main"]
