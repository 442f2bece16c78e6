"""The HTTP client under every LLM call (an `httpx2.Client` handed to the openai SDK).

- Redirects are never followed: a 3xx would otherwise carry the Authorization header (or the
  request) to wherever the reply points. The SDK's own client follows them.
- `credentials=False` removes every credential header just before a request leaves, whatever
  the SDK took from the environment (OPENAI_API_KEY, OPENAI_ORG_ID, OPENAI_PROJECT_ID, ...).
- `guard` (a caller's URL) connects only through `GuardedBackend`: the host is resolved and
  every address checked at connect time, and environment proxies are ignored (a proxy would
  connect on the caller's behalf, past the check).
"""
from __future__ import annotations

from typing import Any

import httpcore2
import httpx2

from evoforge.worker.endpoints import AddressPolicy, GuardedBackend

CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "openai-organization",
                      "openai-project", "api-key", "x-api-key", "cookie")
LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)


class GuardedTransport(httpx2.HTTPTransport):
    """An HTTPTransport whose connection pool connects only to addresses `policy` allows."""

    def __init__(self, policy: AddressPolicy):
        super().__init__(trust_env=False, limits=LIMITS)
        if not isinstance(self._pool, httpcore2.ConnectionPool):  # pragma: no cover
            raise RuntimeError("unexpected httpx2 transport layout: cannot guard its connections")
        self._pool._network_backend = GuardedBackend(policy)


def _strip_credentials(request: httpx2.Request) -> None:
    for name in CREDENTIAL_HEADERS:
        if name in request.headers:
            del request.headers[name]


def make_http_client(*, timeout_s: float, credentials: bool,
                     guard: AddressPolicy | None) -> httpx2.Client:
    kw: dict[str, Any] = {"timeout": timeout_s, "follow_redirects": False, "limits": LIMITS}
    if guard is not None:
        kw.update(transport=GuardedTransport(guard), trust_env=False)
    if not credentials:
        kw["event_hooks"] = {"request": [_strip_credentials]}
    return httpx2.Client(**kw)
