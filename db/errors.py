"""Errors the database layer raises about the state it finds."""
from __future__ import annotations


class CampaignNotFound(LookupError):
    """The campaign does not exist (deleted, or never created), or is not the caller's.

    Not a `KeyError`: a handler for "the campaign is gone" (worker/celery_jobs.py `_guard`, the API's
    404) must not swallow a bad key lookup, which is a bug."""


def campaign_not_found(campaign_id: int) -> CampaignNotFound:
    return CampaignNotFound(f"campaign {campaign_id} not found")
