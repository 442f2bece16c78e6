"""The HTTP edge: what every request must pass before the app sees it, and the headers every
response gets. One pure-ASGI middleware (`EdgeGuard`), added last in api/app.py so that it runs
outside the others: a refused request is never authenticated, routed or read.

- Host (DNS rebinding): a page on evil.example whose name is re-pointed at 127.0.0.1 reaches
  the server with `Host: evil.example`. Only the names the server serves pass: loopback names
  and addresses (any port), the bind address when it is a specific one, and `allowed_hosts`.
  Bound to a wildcard (0.0.0.0, ::) without `allowed_hosts`, the server cannot know its own
  names and lets any Host through (keys are required there anyway; see docs/api.md).
- Origin (CSRF): a browser sends a cross-site POST without a preflight. A state-changing
  request (any method but GET/HEAD/OPTIONS) is refused when its `Origin` is neither this
  server (same host and port as `Host`) nor in `allowed_origins`; without `Origin`, when
  `Sec-Fetch-Site: cross-site` or the `Referer` is foreign. No such header (curl, scripts): served.
- Body size: `Content-Length` over the limit is refused up front; a chunked body is counted
  while it is read and cut at the limit. 413 with a JSON `detail`, before any key is checked.
  A route may have its own limit (`route_limits`: `POST /api/v1/problems` takes a problem
  archive up to evaluators/openevolve/package.py's MAX_UPLOAD_BYTES); every other route keeps
  the server's.
- Headers: `X-Content-Type-Options: nosniff`, `Referrer-Policy`, `X-Frame-Options` on every
  response; HTML gets the dashboard's Content-Security-Policy (no inline script),
  everything else a policy that allows nothing and no framing. A route that sets its own CSP
  (Swagger UI, below) keeps it.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from evoforge.api.auth import is_loopback

MiB = 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 4 * MiB
ALLOWED_HOSTS_ENV = "EVOFORGE_ALLOWED_HOSTS"
ALLOWED_ORIGINS_ENV = "EVOFORGE_ALLOWED_ORIGINS"
MAX_BODY_ENV = "EVOFORGE_MAX_BODY_BYTES"
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
WILDCARD_BINDS = frozenset(("", "0.0.0.0", "::", "[::]"))
DEFAULT_PORTS = {"http": 80, "https": 443}

# Scripts only from this server, never inline. Styles may be inline because plotly.js (the
# campaign page's plot) injects a <style> element and sets style attributes on its SVG; with
# every load limited to 'self' (and data: images), injected CSS could not send anything away.
DASHBOARD_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                 "img-src 'self' data:; connect-src 'self'; object-src 'none'; frame-ancestors 'none'; "
                 "base-uri 'none'; form-action 'self'")
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
COMMON_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                  (b"x-frame-options", b"DENY")]


# -- settings ---------------------------------------------------------------------------------


def env_list(name: str) -> list[str]:
    """A comma- or space-separated environment variable as a list."""
    return [v for v in re.split(r"[,\s]+", os.environ.get(name, "")) if v]


def max_body_from_env() -> int:
    raw = os.environ.get(MAX_BODY_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BODY_BYTES
    if not raw.isdigit():
        raise ValueError(f"{MAX_BODY_ENV} must be a number of bytes, not {raw!r}")
    return int(raw)


def split_host(value: str) -> tuple[str, int | None]:
    """A Host header (or host[:port]) as (lower-case name, port or None); ("", None) if malformed.
    'Example.COM.:8000' -> ('example.com', 8000); '[::1]:80' -> ('::1', 80)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        if rest and not rest.startswith(":"):
            return "", None
        port = rest[1:]
    else:
        name, _, port = value.partition(":")
    if port and not (port.isdigit() and int(port) <= 65535):
        return "", None
    return name.rstrip("."), (int(port) if port else None)


def host_names(allowed_hosts: Iterable[str] | None, bind_host: str | None) -> frozenset[str] | None:
    """The host names served besides loopback; None means any (see the module docstring)."""
    names = [split_host(h)[0] if h.strip() != "*" else "*" for h in (allowed_hosts or ()) if h.strip()]
    if names:
        return None if "*" in names else frozenset(names)
    if bind_host is not None and bind_host.strip() in WILDCARD_BINDS:
        return None
    return frozenset([split_host(bind_host)[0]] if bind_host else [])


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an Origin or Referer value; None for 'null' and anything not http(s)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.rstrip("."), port or DEFAULT_PORTS[scheme]


def normalize_origin(url: str) -> tuple[str, str, int]:
    origin = origin_of(url)
    if origin is None:
        raise ValueError(f"not an http(s) origin: {url!r}")
    return origin


def edge_settings(*, allowed_hosts: Iterable[str] | None, allowed_origins: Iterable[str] | None,
                  max_body_bytes: int | None,
                  route_limits: dict[tuple[str, str], int] | None = None) -> dict:
    """`EdgeGuard`'s settings: the given values, else the environment's. Checked here, when the
    app is built (Starlette builds middleware lazily), so a bad value stops `serve` at once."""
    origins = env_list(ALLOWED_ORIGINS_ENV) if allowed_origins is None else list(allowed_origins)
    for origin in origins:
        normalize_origin(origin)
    limit = max_body_from_env() if max_body_bytes is None else max_body_bytes
    if limit < 0:
        raise ValueError("the request body limit must be >= 0 bytes")
    return {"allowed_hosts": env_list(ALLOWED_HOSTS_ENV) if allowed_hosts is None else list(allowed_hosts),
            "allowed_origins": origins, "max_body_bytes": limit,
            "route_limits": dict(route_limits or {})}


# -- the middleware ---------------------------------------------------------------------------


class BodyTooLarge(Exception):
    """Raised from `receive` when a streamed body passes the limit."""


def _header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class EdgeGuard:
    def __init__(self, app, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 allowed_hosts: Iterable[str] | None = None, bind_host: str | None = None,
                 allowed_origins: Iterable[str] = (),
                 route_limits: dict[tuple[str, str], int] | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.route_limits = dict(route_limits or {})  # (METHOD, exact path) -> bytes
        self.hosts = host_names(allowed_hosts, bind_host)
        self.origins = frozenset(normalize_origin(o) for o in allowed_origins)

    # each check answers None (pass) or (status, message)

    def check_host(self, scope) -> tuple[int, str] | None:
        value = _header(scope, b"host")
        if self.hosts is None or value is None:   # no Host: not a browser, so not a rebinding
            return None
        name, _port = split_host(value)
        if name and (is_loopback(name) or name in self.hosts):
            return None
        return 400, (f"host {value[:100]!r} is not served here; the operator can allow it with "
                     "`evoforge serve --allowed-host NAME` (or EVOFORGE_ALLOWED_HOSTS)")

    def _same_origin(self, url: str, host: str | None) -> bool:
        origin = origin_of(url)
        if origin is None:
            return False
        if origin in self.origins:
            return True
        name, port = split_host(host or "")
        return bool(name) and (name, port or DEFAULT_PORTS[origin[0]]) == origin[1:]

    def check_origin(self, scope) -> tuple[int, str] | None:
        if scope["method"] in SAFE_METHODS:
            return None
        host = _header(scope, b"host")
        origin = _header(scope, b"origin")
        if origin is not None:
            if self._same_origin(origin, host):
                return None
            return 403, (f"cross-origin request refused: Origin {origin[:100]!r} is not this server; "
                         "the operator can allow it with `evoforge serve --allowed-origin URL`")
        if (_header(scope, b"sec-fetch-site") or "").strip().lower() == "cross-site":
            return 403, "cross-origin request refused: Sec-Fetch-Site is cross-site (no Origin sent)"
        referer = _header(scope, b"referer")
        if referer is not None and not self._same_origin(referer, host):
            return 403, "cross-origin request refused: the Referer is not this server (no Origin sent)"
        return None

    def limit_of(self, scope) -> int:
        return self.route_limits.get((scope["method"], scope["path"]), self.max_body_bytes)

    def check_length(self, scope) -> tuple[int, str] | None:
        value = _header(scope, b"content-length")
        if value is not None and value.strip().isdigit() and int(value) > self.limit_of(scope):
            return 413, self.too_large(self.limit_of(scope))
        return None

    def too_large(self, limit: int | None = None) -> str:
        limit = self.max_body_bytes if limit is None else limit
        size = f"{limit / MiB:g} MiB" if limit % (MiB // 4) == 0 else f"{limit} bytes"
        return f"request body too large: the limit is {size}"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.check_host(scope) or self.check_length(scope) or self.check_origin(scope)
        if refusal is not None:
            return await _refuse(send, *refusal)

        received = 0
        started = False
        overflow = False
        limit = self.limit_of(scope)

        async def limited_receive():
            nonlocal received, overflow
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    overflow = True
                    raise BodyTooLarge
            return message

        async def headed_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                if overflow:   # whatever the app made of the cut body, the answer is 413
                    raise BodyTooLarge
                started = True
                message = {**message, "headers": _with_security_headers(message.get("headers", []))}
            await send(message)

        try:
            await self.app(scope, limited_receive, headed_send)
        except BodyTooLarge:
            if not started:
                await _refuse(send, 413, self.too_large(limit))


def _with_security_headers(headers) -> list:
    headers = list(headers)
    names = {k.lower() for k, _ in headers}
    headers += [(k, v) for k, v in COMMON_HEADERS if k not in names]
    if b"content-security-policy" not in names:
        html = any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers)
        headers.append((b"content-security-policy", (DASHBOARD_CSP if html else API_CSP).encode()))
    return headers


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close"), (b"content-security-policy", API_CSP.encode()),
               *COMMON_HEADERS]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- Swagger UI under its own policy ----------------------------------------------------------

SWAGGER_CDN = "https://cdn.jsdelivr.net"


def docs_csp(html: str) -> str:
    """Swagger UI's page loads its bundle from the CDN and starts it with one inline script,
    pinned here by its hash (no 'unsafe-inline' for scripts). Swagger UI injects <style>
    elements, so styles stay inline-capable on this page only; it shows no data of ours."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in re.findall(r"<script>(.*?)</script>", html, flags=re.S))
    return (f"default-src 'none'; script-src {SWAGGER_CDN} {hashes}; "
            f"style-src 'self' {SWAGGER_CDN} 'unsafe-inline'; img-src 'self' data: {SWAGGER_CDN} "
            "https://fastapi.tiangolo.com; connect-src 'self'; frame-ancestors 'none'; "
            "base-uri 'none'; form-action 'self'")


def mount_docs(app, url: str = "/docs") -> None:
    """`/docs` (the app is built with docs_url=None) with `docs_csp`; ReDoc is not served."""
    from fastapi.openapi.docs import get_swagger_ui_html

    @app.get(url, include_in_schema=False)
    def swagger_ui():
        page = get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI")
        page.headers["content-security-policy"] = docs_csp(page.body.decode())
        return page
