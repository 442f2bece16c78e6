"""API key repository: keys are stored hashed (sha256), each belongs to a project.

A key is `evf_` + 43 url-safe characters (32 random bytes). Only its hash and a short display
prefix are stored; the key itself is shown once, at creation.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from evoforge.db.models import ApiKey, Project

KEY_PREFIX = "evf_"
DISPLAY_CHARS = 12          # "evf_" + 8 characters, kept to tell keys apart in listings
MAX_KEY_LENGTH = 200


@dataclass(frozen=True)
class KeyInfo:
    id: int
    project: str
    prefix: str
    created_at: datetime
    revoked: bool


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def get_or_create_project(sessions: sessionmaker[Session], name: str) -> int:
    name = name.strip()
    if not name or len(name) > 200:
        raise ValueError("a project name is 1..200 characters")
    with sessions() as s:
        pid = s.scalar(select(Project.id).where(Project.name == name))
    if pid is not None:
        return pid
    try:
        with sessions.begin() as s:
            project = Project(name=name)
            s.add(project)
            s.flush()
            return project.id
    except IntegrityError:  # created concurrently
        with sessions() as s:
            return s.scalar(select(Project.id).where(Project.name == name))


def create_key(sessions: sessionmaker[Session], project: str) -> tuple[str, int]:
    """A new key for `project` (created if needed). Returns (key, project id); the key is not
    stored and cannot be shown again."""
    project_id = get_or_create_project(sessions, project)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with sessions.begin() as s:
        s.add(ApiKey(project_id=project_id, prefix=key[:DISPLAY_CHARS], key_hash=hash_key(key)))
    return key, project_id


def project_of_key(sessions: sessionmaker[Session], key: str) -> int | None:
    """The project id of a valid (not revoked) key, or None."""
    if not key.startswith(KEY_PREFIX) or len(key) > MAX_KEY_LENGTH:
        return None
    with sessions() as s:
        return s.scalar(select(ApiKey.project_id)
                        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked.is_(False)))


def any_keys(sessions: sessionmaker[Session]) -> bool:
    """True once any key was ever created (revoked ones included: revoking every key must not
    reopen a server)."""
    with sessions() as s:
        return s.scalar(select(ApiKey.id).limit(1)) is not None


def list_keys(sessions: sessionmaker[Session], project: str | None = None) -> list[KeyInfo]:
    with sessions() as s:
        q = select(ApiKey, Project.name).join(Project, Project.id == ApiKey.project_id).order_by(ApiKey.id)
        if project is not None:
            q = q.where(Project.name == project)
        return [KeyInfo(k.id, name, k.prefix, k.created_at, k.revoked) for k, name in s.execute(q)]


def revoke_key(sessions: sessionmaker[Session], key_id: int) -> bool:
    with sessions.begin() as s:
        return bool(s.execute(update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked.is_(False))
                              .values(revoked=True)).rowcount)


def project_name(sessions: sessionmaker[Session], project_id: int | None) -> str | None:
    if project_id is None:
        return None
    with sessions() as s:
        return s.scalar(select(Project.name).where(Project.id == project_id))
