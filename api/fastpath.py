"""A pure-ASGI fast path for the hot reads: GET /api/v1/campaigns/{id}/elites and /programs,
/api/v1/programs/{id} and /programs/{id}/lineage, for a caller whose API key is cached as valid.

Under 50 concurrent clients the framework, not the database, was much of the cost: routing,
dependency resolution and the middleware stack took ~0.25-0.3 ms of CPU per request on top of
uvicorn's own HTTP handling, a sixth of a program read's (docs/benchmarks.md). So this
middleware answers these requests itself, through the very functions the routes call (the same
reads, the same encoders, the same bytes), in two cases:

- a cache hit of /elites or /programs: the route stored the body under (endpoint, campaign
  version, raw query string) (`api.caches.body_key`) after it validated the query, so nothing
  about the query is parsed here. The version is read from the database for every request
  (`ApiCaches.fresh`: a query that starts after the request arrived), so a hit is never older
  than a write committed before the request, whichever process made it;
- the plain form of a request: /programs pages whose every parameter is given once, in the
  canonical spelling of a value the route accepts (`page_query`), a program with no query, a
  lineage with at most `depth=N`. Anything else (another spelling, an unknown or repeated
  parameter, a value out of range) is the route's, which validates it and answers, 422 included.

A fast answer is only ever a 200: whatever a read raises (no such program, not the caller's, a
bad cursor, a database error, the version read's included) hands the request to the route,
which reads again and answers (404, 422, 500) as it always does. So:

- auth is the route's: a key is served here only while the route's `principal` dependency has it
  cached as valid (same TTL, same header parsing: `api.auth.bearer_token`), and the reads are
  scoped to its project as the route's are;
- the bytes and headers are the ones the route sends (content-length, content-type);
- the route object is put in the scope so that the latency metrics keep their route label: an
  endpoint is answered here only once its route has answered once (and been seen, by its
  endpoint function).

tests/api/test_fast_reads.py drives random query strings through a server with and without
this middleware and compares the answers byte for byte.
"""
from __future__ import annotations

import re
from urllib.parse import unquote

from evoforge.api.auth import Principal, bearer_token
from evoforge.api.caches import MISS, body_key
from evoforge.api.schemas import MAX_ID

# Where the fast path leaves (project_id, campaign_id, version) for the route: a version read
# after this request arrived, so the route need not read it again.
VERSION_SCOPE_KEY = "evoforge.campaign_version"
_CAMPAIGN = re.compile(r"/api/v1/campaigns/([1-9][0-9]{0,9})/(elites|programs)")
_PROGRAM = re.compile(r"/api/v1/programs/([1-9][0-9]{0,9})(/lineage)?")
_NATURAL = re.compile(r"0|[1-9][0-9]{0,5}")


def _natural(text: str, most: int) -> int | None:
    return int(text) if _NATURAL.fullmatch(text) and int(text) <= most else None


def page_query(raw: bytes) -> dict | None:
    """The /programs parameters of a query string in its plain form, or None: each parameter
    once, each value spelled as the route would read it back (decimal integers without sign,
    space or leading zero; a sort or status from their lists; a cursor of the cursor pattern,
    no `+`, which the route reads as a space). Never accepts what the route refuses: it is the
    same checks, stricter."""
    from evoforge.api.deps import MAX_LIMIT, MAX_OFFSET
    from evoforge.api.routers.campaigns import MAX_CURSOR, MAX_ISLAND, SORTS
    from evoforge.api.services.listing import _CURSOR
    from evoforge.evolution.types import EVAL_STATUSES

    q: dict = {"sort": "score", "status": None, "island": None, "limit": 50, "offset": 0,
               "after": None}
    if not raw:
        return q
    seen = set()
    for part in raw.split(b"&"):
        key, eq, value = part.partition(b"=")
        try:
            name, text = key.decode("ascii"), value.decode("ascii")
        except UnicodeDecodeError:
            return None
        if not eq or name in seen or "+" in text:
            return None
        seen.add(name)
        if "%" in text:
            try:
                text = unquote(text, errors="strict")
            except UnicodeDecodeError:
                return None
        if name == "limit":
            v = _natural(text, MAX_LIMIT)
            ok = v is not None and v >= 1
        elif name == "offset":
            v = _natural(text, MAX_OFFSET)
            ok = v is not None
        elif name == "island":
            v = _natural(text, MAX_ISLAND)
            ok = v is not None
        elif name == "sort":
            v, ok = text, text in SORTS
        elif name == "status":
            v, ok = text, text in EVAL_STATUSES
        elif name == "after":
            v, ok = text, len(text) <= MAX_CURSOR and _CURSOR.fullmatch(text) is not None
        else:
            return None
        if not ok:
            return None
        q[name] = v
    return q


class FastReads:
    def __init__(self, app, state, endpoints: dict):
        self.app, self.state = app, state
        self.endpoints = endpoints             # the routes' endpoint functions -> endpoint
        self.routes: dict[str, object] = {}   # endpoint -> the route object, once seen

    def _project(self, scope) -> int | None:
        """The caller's project while its key is cached as valid, else None (the route's)."""
        if scope.get("root_path"):
            return None
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        token = bearer_token(header.decode("latin-1")) if header is not None else None
        if token is None:
            return None
        caches = self.state.caches
        project_id = caches.project_of(caches.key_id(token))
        return None if project_id is MISS else project_id

    async def _answer(self, scope) -> tuple[bytes, str] | None:
        """(body, endpoint) of a request answered here, else None."""
        path = scope["path"]
        m = _CAMPAIGN.fullmatch(path)
        p = None if m else _PROGRAM.fullmatch(path)
        if m is None and p is None:
            return None
        project_id = self._project(scope)
        if project_id is None:
            return None
        who, raw = Principal(project_id), scope.get("query_string", b"")
        if m is not None:
            campaign_id, kind = int(m.group(1)), m.group(2)
            if campaign_id > MAX_ID:   # past the columns' range: the route's validation, 422
                return None
            from evoforge.api.routers.campaigns import programs_page, read_version

            try:
                version = await read_version(self.state, who, campaign_id)
            except Exception:
                return None
            scope[VERSION_SCOPE_KEY] = (project_id, campaign_id, version)
            if version is None:
                return None   # the route answers 404
            body = self.state.caches.body(body_key(kind, version, raw))
            if body is not None:
                return body, kind
            query = page_query(raw) if kind == "programs" and kind in self.routes else None
            if query is None:
                return None
            try:
                return await programs_page(self.state, who, campaign_id, version, raw, query), kind
            except Exception:
                return None
        program_id, kind = int(p.group(1)), "lineage" if p.group(2) else "program"
        if program_id > MAX_ID or kind not in self.routes:
            return None
        from evoforge.api.read_threads import run_read
        from evoforge.api.routers.programs import (DEFAULT_LINEAGE, MAX_LINEAGE, lineage_json,
                                                   program_json)

        try:
            if kind == "program":
                return (await run_read(program_json, self.state, who, program_id), kind) \
                    if not raw else None
            depth = DEFAULT_LINEAGE
            if raw:
                name, eq, text = raw.partition(b"=")
                depth = _natural(text.decode("latin-1"), MAX_LINEAGE) \
                    if name == b"depth" and eq else None
                if not depth:
                    return None
            return await run_read(lineage_json, self.state, who, program_id, depth), kind
        except Exception:
            return None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET":
            answer = await self._answer(scope)
            if answer is not None:
                body, kind = answer
                scope["route"] = self.routes.get(kind)
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", str(len(body)).encode("latin-1")),
                                        (b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
        if len(self.routes) < len(self.endpoints):
            self._see(scope.get("route"))

    def _see(self, route) -> None:
        """Remember the route object the router matched, for the metrics label of the requests
        answered here, by its endpoint function (not its path: the dashboard has routes whose
        paths end alike)."""
        kind = self.endpoints.get(getattr(route, "endpoint", None))
        if kind is not None:
            self.routes.setdefault(kind, route)


def install(app, state) -> None:
    """Add the fast path inside the latency middleware (call before adding that one)."""
    from evoforge.api.routers import campaigns, programs

    app.add_middleware(FastReads, state=state, endpoints={
        campaigns.get_elites: "elites", campaigns.list_programs: "programs",
        programs.get_program: "program", programs.get_lineage: "lineage"})
