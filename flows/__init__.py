"""Prefect flows: the thin wiring around tasks/."""

from flows.process import tune_memory

tune_memory()
