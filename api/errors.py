"""Documented error responses shared by the routers.

E413 belongs on every operation that takes a body: the edge guard (api/guards.py) refuses any
body over the server's limit before the route sees it, so a route cannot leave 413 out of its
contract just because its own code never returns it. Routes with a limit of their own (problem
upload, campaign import) declare theirs instead."""
from evoforge.api.guards import DEFAULT_MAX_BODY_BYTES, MAX_BODY_ENV, MiB
from evoforge.api.schemas import ErrorPublic

E401 = {401: {"model": ErrorPublic, "description": "No, malformed or invalid API key "
                                                   "(with a `WWW-Authenticate: Bearer` header)."}}
E413 = {413: {"model": ErrorPublic, "description": (
    f"Body over the server's request body limit, {DEFAULT_MAX_BODY_BYTES // MiB} MiB unless the "
    f"operator set another (`evoforge serve --max-body-mb N`, ${MAX_BODY_ENV}). The limit counts "
    "bytes as sent, so text near a field's maxLength can pass it (non-ASCII, \\u escapes).")}}
