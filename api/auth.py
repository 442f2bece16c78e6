"""Authentication and tenancy.

`Authorization: Bearer evf_...` names a project; every campaign and program lookup is scoped to
it, and another project's resources are 404 (their existence is never revealed). When no key
exists at all and the server listens on loopback, the API runs open as a single-user tool and
sees the campaigns that belong to no project.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from typing import Annotated

from fastapi import HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from starlette.concurrency import run_in_threadpool

from evoforge.api.caches import MISS
from evoforge.db import apikeys

# Declares the scheme in OpenAPI (the "Authorize" button of /docs); the header is parsed below.
bearer_scheme = HTTPBearer(auto_error=False, description="An API key: `evf_...`.")
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="evoforge"'}


@dataclass(frozen=True)
class Principal:
    project_id: int | None      # None: open mode (single-user, project-less campaigns)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=message, headers=CHALLENGE)


def open_allowed(request: Request) -> bool:
    """May a request without a key go through? Only when no key exists and the server is on
    loopback (or the app was told explicitly with `open_mode`)."""
    state = request.app.state.evo
    if state.open_mode is False:
        return False
    if apikeys.any_keys(state.sessions):
        return False
    if state.open_mode is True:
        return True
    if state.bind_host is not None:
        return is_loopback(state.bind_host)
    server = request.scope.get("server")
    return bool(server) and is_loopback(server[0])


def bearer_token(header: str) -> str | None:
    """The key of an `Authorization: Bearer <key>` header value, or None when malformed (also
    used by api/fastpath.py, so both read a header the same way)."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def principal(request: Request,
                    _documented: Annotated[HTTPAuthorizationCredentials | None,
                                           Security(bearer_scheme)] = None) -> Principal:
    """The FastAPI dependency every scoped route uses.

    A valid key's project is cached in-process for `state.caches.key_ttl_s` (5 s by default,
    api/caches.py): revoking a key takes effect within that time, not at once. The database is
    only asked (in the thread pool) on a miss."""
    state = request.app.state.evo
    header = request.headers.get("authorization")
    if header:
        token = bearer_token(header)
        if token is None:
            raise _unauthorized("malformed Authorization header: expected 'Bearer <key>'")
        caches = state.caches
        key_id = caches.key_id(token)
        project_id = caches.project_of(key_id)
        if project_id is MISS:
            project_id = await caches.single_flight(
                ("key", key_id), lambda: apikeys.project_of_key(state.sessions, token))
            if project_id is None:
                raise _unauthorized("invalid or revoked API key")
            caches.remember_key(key_id, project_id)
        return Principal(project_id)
    if await run_in_threadpool(open_allowed, request):
        return Principal(None)
    raise _unauthorized("an API key is required: send 'Authorization: Bearer <key>' "
                        "(create one with `evoforge apikey create --project NAME`)")
