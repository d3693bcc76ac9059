"""Prefect flows: the thin wiring around tasks/."""

from flows.prefect.process import tune_memory

tune_memory()
