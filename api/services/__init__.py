"""Service functions behind the routes: scoped reads, campaign actions, the in-process runner."""
from __future__ import annotations

from datetime import datetime, timezone


def utc(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they were written in UTC."""
    if dt is None or dt.tzinfo is not None:
        return dt
    return dt.replace(tzinfo=timezone.utc)



class NotFound(LookupError):
    """No such resource for this principal (another project's resources are not found either)."""


class Conflict(Exception):
    """The request is well formed but impossible in the resource's current state."""
