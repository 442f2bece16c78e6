"""A pure-ASGI fast path for cache hits of GET /api/v1/campaigns/{id}/elites and /programs.

Under 50 concurrent clients the framework, not the database, was the cost: routing, dependency
resolution and the middleware stack took ~0.25-0.3 ms of CPU per request on top of uvicorn's
own HTTP handling (docs/benchmarks.md: without this middleware p99 grows several times). This
middleware answers a request itself only when the route has already answered the very same
request at the campaign's current version: the route stores each body under (endpoint,
campaign version, raw query string) (`api.caches.body_key`), after it validated the query, so
nothing about the query is parsed or checked here, and a new query parameter is added to the
route alone. The version is read from the database for every request (`ApiCaches.fresh`: a
query that starts after the request arrived, shared with the requests arriving meanwhile), so
a hit is never older than a write committed before the request, whichever process made it.
In every other case (no or unknown key, open mode, a body not cached) the request goes on
untouched, with the version it read in the scope, and the FastAPI route answers (and fills the
caches). So:

- auth is the route's: a key is served here only while the route's `principal` dependency has it
  cached as valid (same TTL, same header parsing: `api.auth.bearer_token`); another project's
  campaign has no version under the caller's project (the read is scoped), so it goes to the
  route (404);
- the bytes and headers are the ones the route stores and sends (content-length, content-type);
- the route object is put in the scope so that the latency metrics keep their route label.
"""
from __future__ import annotations

import re

from evoforge.api.auth import Principal, bearer_token
from evoforge.api.caches import MISS, body_key
from evoforge.api.schemas import MAX_ID

# Where the fast path leaves (project_id, campaign_id, version) for the route: a version read
# after this request arrived, so the route need not read it again.
VERSION_SCOPE_KEY = "evoforge.campaign_version"
_PATH = re.compile(r"/api/v1/campaigns/([1-9][0-9]{0,18})/(elites|programs)")


class CachedReads:
    def __init__(self, app, state, routes: dict[str, object]):
        self.app, self.state, self.routes = app, state, routes

    def _candidate(self, scope) -> tuple[int, int, str] | None:
        """(project id, campaign id, endpoint) of a GET this path may answer, or None."""
        m = _PATH.fullmatch(scope["path"])
        if m is None or scope.get("root_path") or int(m.group(1)) > MAX_ID:
            return None   # (an id past the columns' range: the route's validation answers 422)
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        token = bearer_token(header.decode("latin-1")) if header is not None else None
        if token is None:
            return None
        caches = self.state.caches
        project_id = caches.project_of(caches.key_id(token))
        if project_id is MISS or project_id is None:
            return None
        return project_id, int(m.group(1)), m.group(2)

    async def _lookup(self, scope) -> tuple[bytes, object] | None:
        found = self._candidate(scope)
        if found is None:
            return None
        project_id, campaign_id, kind = found
        from evoforge.api.routers.campaigns import read_version

        version = await read_version(self.state, Principal(project_id), campaign_id)
        scope[VERSION_SCOPE_KEY] = (project_id, campaign_id, version)
        if version is None:
            return None  # the route answers 404
        body = self.state.caches.body(body_key(kind, version, scope.get("query_string", b"")))
        return None if body is None else (body, self.routes.get(kind))

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET":
            hit = await self._lookup(scope)
            if hit is not None:
                body, route = hit
                if route is not None:
                    scope["route"] = route
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", str(len(body)).encode("latin-1")),
                                        (b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
        # Remember the route object the router matched (for the metrics label of later hits);
        # a hit always follows a miss that went through the route and filled the caches.
        route = scope.get("route")
        path = getattr(route, "path", "")
        for kind in ("elites", "programs"):
            if kind not in self.routes and path.endswith("/campaigns/{campaign_id}/" + kind):
                self.routes[kind] = route


def install(app, state) -> None:
    """Add the fast path inside the latency middleware (call before adding that one)."""
    app.add_middleware(CachedReads, state=state, routes={})
