"""Export, import and prune as an API key's project sees them (worker/transfer.py and
worker/prune.py hold the meaning): only the caller's own campaigns are exported or pruned, and an
imported campaign belongs to the caller's project, arrives paused (or with its final status),
and may name only LLM endpoints this project may use (api/services/llm_access.py), as a
campaign created here. The file is untrusted: its body is capped at the edge (api/guards.py
route limit, `MAX_IMPORT_BYTES`) and what it expands to at `MAX_EXPANDED_BYTES`."""
from __future__ import annotations

import os
from typing import IO, Any, Iterator

from sqlalchemy.orm import Session, sessionmaker

from evoforge.api.auth import Principal
from evoforge.api.services import Conflict, NotFound
from evoforge.api.services.llm_access import check_mutator
from evoforge.api.services.project_campaigns import get_campaign, scope_of
from evoforge.worker.campaign_service import CampaignNotFound

MiB = 1 << 20
MAX_IMPORT_ENV = "EVOFORGE_MAX_IMPORT_BYTES"


def max_import_bytes() -> int:
    """The largest import body (compressed), $EVOFORGE_MAX_IMPORT_BYTES, default 64 MiB."""
    raw = os.environ.get(MAX_IMPORT_ENV, "").strip()
    if not raw:
        return 64 * MiB
    if not raw.isdigit():
        raise ValueError(f"{MAX_IMPORT_ENV} must be a number of bytes, not {raw[:40]!r}")
    return int(raw)


def max_expanded_bytes(body_limit: int) -> int:
    """What an import body may expand to: 32 times its limit (JSON Lines of programs compress
    ~5-20 times with zstd), so a small zstd bomb stops long before memory or disk run out."""
    return 32 * body_limit


def filename(campaign_id: int) -> str:
    return f"campaign-{int(campaign_id)}.evoforge.jsonl.zst"


def check_export(sessions: sessionmaker[Session], principal: Principal, campaign_id: int) -> None:
    """NotFound (404) before a stream starts: another project's campaign is not found."""
    with sessions() as s:
        get_campaign(s, principal, campaign_id)


def export_stream(sessions: sessionmaker[Session], principal: Principal,
                  campaign_id: int) -> Iterator[bytes]:
    from evoforge.worker import transfer

    return transfer.export_chunks(sessions, campaign_id, scope=scope_of(principal))


def import_file(sessions: sessionmaker[Session], principal: Principal, source: IO[bytes], *,
                body_limit: int) -> int:
    """Import `source` into the caller's project; the new campaign's id. SpecError (422) with
    the line number on a file it refuses; nothing is stored then."""
    from evoforge.worker import transfer

    summary = transfer.import_campaign(
        sessions, source, project_id=principal.project_id,
        max_bytes=max_expanded_bytes(body_limit),
        admit=lambda config: check_mutator(sessions, principal, config))
    return summary.campaign_id


def prune(sessions: sessionmaker[Session], principal: Principal, campaign_id: int, *,
          keep: str, older_than: str | None, force: bool = False) -> dict[str, Any]:
    from evoforge.worker import prune as retention

    keep_set, age = retention.parse_keep(keep), retention.parse_age(older_than)  # SpecError: 422
    try:
        result = retention.prune_campaign(sessions, campaign_id, keep=keep_set, older_than=age,
                                          scope=scope_of(principal), force=force)
    except CampaignNotFound as exc:
        raise NotFound(str(exc)) from None
    except retention.CampaignBusy as exc:
        raise Conflict(str(exc)) from None
    return result.as_dict()
