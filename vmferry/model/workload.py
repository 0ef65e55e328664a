"""What the store keeps of a VM's workload: profile samples, and predictions beside the
actual figures of the migration they were made for (``vmferry profile``, ``vmferry predict``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProfileSample:
    """One sample of a VM's workload: ``metrics`` are rates over the interval before
    ``taken_at`` (see :data:`vmferry.predict.profile.METRICS`)."""

    vm: str
    host: str
    taken_at: str  # ISO 8601 UTC
    metrics: dict[str, Any]

    def get(self, key: str) -> float | None:
        value = self.metrics.get(key)
        return None if value is None else float(value)


@dataclass(frozen=True)
class PredictionRecord:
    """A migration job's prediction, made before it ran (``predicted``: the
    `vmferry predict --json` document), and what happened (``actual``: total_time_ms,
    downtime_ms, transferred_bytes, converged, status; None until the job ended)."""

    job_id: str
    vm: str
    source: str
    destination: str
    predicted: dict[str, Any]
    actual: dict[str, Any] | None
    created_at: str
    updated_at: str
