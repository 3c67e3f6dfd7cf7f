"""Datasets whose ids no output could hold by chance, for the privacy scans of the tests: every citizen,
caseworker and measurement id replaced by a long, random-looking one ("cit-3f9a61c2d0b7"), so that a
substring match in a file means the id itself, not a run of digits (the simulator's "W0017" could be)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from features.dataset import Dataset, canonical

ID_PREFIXES = {"citizen_id": "cit", "caseworker_id": "cwk", "measurement_id": "msr"}
TABLES = ("citizens", "caseworkers", "measurements", "interventions", "outcomes")


def distinctive(prefix: str, value: str) -> str:
    return f"{prefix}-{hashlib.sha256(value.encode()).hexdigest()[:12]}"


def relabelled(dataset: Dataset) -> Dataset:
    """The dataset with every citizen, caseworker and measurement id replaced by a distinctive one."""
    frames = {}
    for name in TABLES:
        frame = getattr(dataset, name).copy()
        for column, prefix in ID_PREFIXES.items():
            if column in frame:
                frame[column] = frame[column].map(lambda value, prefix=prefix: distinctive(prefix, value))
        frames[name] = canonical(name, frame)
    return replace(dataset, **frames)
