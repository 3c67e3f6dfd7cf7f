"""The audit log: one JSON line per prediction, appended to `settings.audit_log_path`.

A line holds when, which model (name and version), the pseudonymous citizen id, the dates the
prediction is for, the probability and the three strongest factors — nothing else about the
citizen (no birth year, no answers), so that the log adds no personal data to what the id points at.

Lines are written with one `os.write` on a file opened with O_APPEND, under a lock: lines from
threads of one process never interleave, and neither do those of several server workers (an
append of one buffer is atomic on a local file system).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TOP_FACTORS = 3


def audit_record(prediction: Mapping[str, Any], at: datetime) -> dict:
    """The audit line of one prediction (a `schemas.Prediction` as a dict), as a dict."""
    factors = prediction["explanation"]["factors"][:TOP_FACTORS]
    return {
        "time": at.isoformat(timespec="milliseconds"),
        "model": prediction["model"]["name"],
        "model_version": prediction["model"]["version"],
        "citizen_id": prediction["citizen_id"],
        "as_of": str(prediction["as_of"]),
        "measured_on": str(prediction["measured_on"]),
        "probability": round(prediction["probability"], 6),
        "top_factors": [{"factor": f["key"], "contribution": round(f["contribution"], 4)} for f in factors],
    }


class AuditLog:
    """Appends audit lines to `path` (folders created on first write); safe across threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fd: int | None = None

    def record(self, predictions: Sequence[Mapping[str, Any]]) -> None:
        """Append one line per prediction, all in one write."""
        if not predictions:
            return
        at = datetime.now(UTC)
        data = "".join(json.dumps(audit_record(p, at), ensure_ascii=False) + "\n" for p in predictions).encode()
        with self._lock:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            view = memoryview(data)
            while view:  # os.write may write less than asked for a very large batch
                view = view[os.write(self._fd, view) :]

    __call__ = record

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
