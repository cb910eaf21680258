"""Times as the API shows them: ISO 8601 in UTC (stored as epoch seconds, shown as strings)."""

from __future__ import annotations

from datetime import datetime, timezone


def iso(ts: float | None) -> str | None:
    """`2026-12-02T01:30:00.123Z`, or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
