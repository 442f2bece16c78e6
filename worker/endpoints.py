"""The operator's LLM endpoints, and where a mutator may send a request (and a key).

The operator declares endpoints in a TOML file named by `EVOFORGE_LLM_ENDPOINTS`: a name, a
base URL, where the key comes from (the NAME of an environment variable or a file path, never
the key), the models callers may ask for and their prices. REST callers pick an endpoint by
name; the server sends a key only to the URL the operator configured with it.

A caller's own `base_url` is refused unless `[caller_urls]` lets that project use one. Even
then it never gets a key, and its host must resolve to public addresses only (unless
`allow_private`): checked when the campaign is created and again, on the very address being
connected to, by `GuardedBackend` (so DNS rebinding between the two does not help).

`resolve_target()` is the one place that decides, for a stored campaign, URL + key + guard.
"""
from __future__ import annotations

import ipaddress
import os
import socket
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpcore2
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evoforge.db.campaign_config import HttpURL, Prices

ENDPOINTS_ENV = "EVOFORGE_LLM_ENDPOINTS"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
ANY_MODEL = "*"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class EndpointError(ValueError):
    """A mutator the caller may not have, or an endpoint file the server cannot use."""


class BlockedAddress(Exception):
    """A connection the address policy refused (raised from `GuardedBackend.connect_tcp`)."""


# -- the file ----------------------------------------------------------------------------------


class EndpointConfig(BaseModel):
    """One `[endpoints.NAME]` table."""
    model_config = ConfigDict(extra="forbid")
    base_url: HttpURL = Field(min_length=8, max_length=500)
    key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,199}$",
                                description="Name of the environment variable holding the key.")
    key_file: str | None = Field(None, max_length=4096, description="File holding the key.")
    models: list[str] = Field(min_length=1, max_length=256,
                              description='Model names callers may use; "*" allows any.')
    prices: Prices = Field(default_factory=dict,
                           description="USD per 1M (prompt, completion) tokens, by model name.")
    projects: list[str] | None = Field(None, description="Only these projects (default: all).")

    @model_validator(mode="before")
    @classmethod
    def _no_inline_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and {"key", "api_key"} & set(data):
            raise ValueError("never put the key itself in the file: name an environment variable "
                             "(key_env) or a file (key_file) that holds it")
        return data


    @model_validator(mode="after")
    def _one_key_source(self) -> "EndpointConfig":
        if self.key_env and self.key_file:
            raise ValueError("give key_env or key_file, not both")
        return self


class CallerURLs(BaseModel):
    """`[caller_urls]`: which projects may name their own base_url (never with a server key)."""
    model_config = ConfigDict(extra="forbid")
    projects: list[str] = Field(default_factory=list)
    open_mode: bool = Field(False, description="Also key-less callers of a loopback server.")
    allow_private: bool = Field(False, description="Loopback and private ranges too.")


class EndpointsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    endpoints: dict[str, EndpointConfig] = Field(default_factory=dict)
    caller_urls: CallerURLs = Field(default_factory=CallerURLs)

    @field_validator("endpoints")
    @classmethod
    def _names(cls, v: dict[str, EndpointConfig]) -> dict[str, EndpointConfig]:
        import re
        bad = [n for n in v if not re.match(NAME_PATTERN, n)]
        if bad:
            raise ValueError(f"endpoint names must match {NAME_PATTERN}: {bad}")
        return v

    def endpoint(self, name: str) -> EndpointConfig:
        ep = self.endpoints.get(name)
        if ep is None:
            known = ", ".join(sorted(self.endpoints)) or "none configured"
            raise EndpointError(f"unknown LLM endpoint {name!r} (available: {known})")
        return ep

    def usable_by(self, project: str | None) -> dict[str, EndpointConfig]:
        return {n: ep for n, ep in self.endpoints.items()
                if ep.projects is None or (project is not None and project in ep.projects)}

    def caller_urls_allowed(self, project: str | None) -> bool:
        if project is None:
            return self.caller_urls.open_mode
        return project in self.caller_urls.projects


_cache: dict[str, Any] = {}
_cache_lock = threading.Lock()


def load_endpoints(path: str | None = None) -> EndpointsFile:
    """The operator's file (`EVOFORGE_LLM_ENDPOINTS`), re-read when it changes; none: no
    endpoints and no caller URLs. A broken file is an `EndpointError` naming what is wrong."""
    path = path if path is not None else os.environ.get(ENDPOINTS_ENV, "")
    if not path:
        return EndpointsFile()
    try:
        st = os.stat(path)
    except OSError as exc:
        raise EndpointError(f"{ENDPOINTS_ENV}={path}: {exc.strerror}") from None
    stamp = (path, st.st_mtime_ns, st.st_size)
    with _cache_lock:
        if _cache.get("stamp") == stamp:
            return _cache["value"]
    try:
        raw = tomllib.loads(Path(path).read_text())
        value = EndpointsFile.model_validate(raw)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise EndpointError(f"{ENDPOINTS_ENV}={path}: {exc}") from None
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise EndpointError(f"{ENDPOINTS_ENV}={path}: {errors}") from None
    with _cache_lock:
        _cache.update(stamp=stamp, value=value)
    return value


def read_key(name: str, ep: EndpointConfig) -> str | None:
    """The endpoint's key, read now from where the operator said; None when it names none.
    A named source that is empty or missing is an error (a silent key-less call would only
    fail later with a 401)."""
    if ep.key_env:
        key = os.environ.get(ep.key_env, "").strip()
        if not key:
            raise EndpointError(f"LLM endpoint {name!r}: environment variable {ep.key_env} is not set")
        return key
    if ep.key_file:
        try:
            key = Path(ep.key_file).read_text().strip()
        except OSError as exc:
            raise EndpointError(f"LLM endpoint {name!r}: cannot read its key file: "
                                f"{exc.strerror}") from None
        if not key:
            raise EndpointError(f"LLM endpoint {name!r}: its key file is empty")
        return key
    return None


# -- addresses ---------------------------------------------------------------------------------

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, 6to4, Teredo, NAT64)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    n = int(ip)
    if n >> 32 == 0 and n > 1:           # ::a.b.c.d (IPv4-compatible, deprecated)
        return ipaddress.IPv4Address(n)
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(n & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses a caller-supplied URL may reach. Multicast, unspecified, reserved and
    link-local (cloud metadata at 169.254.169.254) never; loopback, private and other
    non-global ranges only with `allow_private`."""
    allow_private: bool = False

    def refusal(self, ip: IPAddress) -> str | None:
        """Why `ip` is refused, or None when it is allowed."""
        for addr in (ip, _embedded_v4(ip)):
            if addr is None:
                continue
            for kind in ("multicast", "unspecified", "reserved", "link_local", "site_local"):
                if getattr(addr, f"is_{kind}", False):
                    return f"a {kind.replace('_', '-')} address"
            if self.allow_private:
                continue
            for kind in ("loopback", "private"):
                if getattr(addr, f"is_{kind}"):
                    return f"a {kind} address"
            if not addr.is_global:
                return "not a public address"
        return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (numeric spellings such as 0x7f.1 included, as the C
    library reads them); OSError when it resolves to none."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if ip not in out:
            out.append(ip)
    if not out:
        raise OSError(f"{host} resolves to no address")
    return out


def check_address(host: str, port: int, policy: AddressPolicy) -> list[IPAddress]:
    """The addresses to connect to, all allowed; BlockedAddress when any is not (a name that
    resolves to one public and one private address is refused)."""
    try:
        ips = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise BlockedAddress(f"cannot resolve {host!r}: {exc}") from None
    for ip in ips:
        why = policy.refusal(ip)
        if why:
            shown = host if host == str(ip) else f"{host} ({ip})"
            raise BlockedAddress(f"{shown} is {why}")
    return ips


class GuardedBackend(httpcore2.SyncBackend):
    """httpcore's network backend that resolves the host itself, checks every address against
    the policy and connects to a checked address: what is checked is what is connected to."""

    def __init__(self, policy: AddressPolicy):
        super().__init__()
        self.policy = policy

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None) -> Any:
        last: Exception | None = None
        for ip in check_address(host, port, self.policy):
            try:
                return super().connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except httpcore2.ConnectError as exc:
                last = exc
        raise last or httpcore2.ConnectError(f"cannot connect to {host}")


def check_caller_url(url: str, policy: AddressPolicy) -> None:
    """A caller's base_url, checked when the campaign is created: http(s), a host, no
    user:password@, and every address it resolves to allowed."""
    import httpx2

    try:
        parsed = httpx2.URL(url)
    except Exception as exc:
        raise EndpointError(f"base_url is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise EndpointError("base_url must be an http:// or https:// URL with a host")
    if parsed.userinfo:
        raise EndpointError("base_url must not contain user:password@")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        check_address(parsed.host, port, policy)
    except BlockedAddress as exc:
        raise EndpointError(f"base_url refused: {exc}") from None


# -- what a campaign may ask for, and what it gets ----------------------------------------------


def check_mutator(m: Any, project: str | None, cfg: EndpointsFile | None = None) -> None:
    """A REST caller's mutator spec (db.campaign_config.MutatorSpec), for a caller of `project`
    (None: open mode). EndpointError with a message the caller can act on."""
    if m.kind != "llm":
        if m.endpoint or m.base_url:
            raise EndpointError("mutator.endpoint and mutator.base_url need mutator.kind 'llm'")
        return
    cfg = cfg or load_endpoints()
    if m.endpoint:
        usable = cfg.usable_by(project)
        if m.endpoint not in usable:
            known = ", ".join(sorted(usable)) or "none configured"
            raise EndpointError(f"unknown LLM endpoint {m.endpoint!r} (available: {known})")
        check_models(m.endpoint, usable[m.endpoint], [x.name for x in m.models])
        if m.prices:
            raise EndpointError("mutator.prices come from the operator's endpoint configuration; "
                                "leave them out when you use mutator.endpoint")
        return
    if not m.base_url:
        known = ", ".join(sorted(cfg.usable_by(project))) or "none configured"
        raise EndpointError(f"an LLM mutator needs mutator.endpoint (available: {known})")
    if not cfg.caller_urls_allowed(project):
        raise EndpointError("mutator.base_url is not allowed for this project: pick one of the "
                            "operator's endpoints with mutator.endpoint (GET /api/v1/endpoints)")
    check_caller_url(m.base_url, AddressPolicy(cfg.caller_urls.allow_private))


def check_models(name: str, ep: EndpointConfig, models: list[str]) -> None:
    if ANY_MODEL in ep.models:
        return
    if not models:
        raise EndpointError(f"LLM endpoint {name!r} needs mutator.models, among: "
                            f"{', '.join(ep.models)}")
    bad = [x for x in models if x not in ep.models]
    if bad:
        raise EndpointError(f"model(s) {', '.join(map(repr, bad))} are not allowed on LLM "
                            f"endpoint {name!r} (allowed: {', '.join(ep.models)})")


@dataclass(frozen=True)
class LLMTarget:
    """Where a campaign's LLM calls go. `api_key` None: no credentials at all. `guard` set:
    only addresses the policy allows (a caller's URL); None: the operator's own URL."""
    base_url: str
    api_key: str | None
    guard: AddressPolicy | None
    prices: dict[str, tuple[float, float]]
    endpoint: str | None = None


def resolve_target(m: Any, *, operator_url: str | None = None,
                   cfg: EndpointsFile | None = None) -> LLMTarget:
    """For a stored mutator spec. Default deny: a stored base_url gets no key and the guard,
    unless the caller of this function (the local CLI, whose user is the operator) passes that
    very URL as `operator_url`, in-process, at run time."""
    from evoforge.worker.llm_client import resolve_api_key

    if m.endpoint:
        cfg = cfg or load_endpoints()
        ep = cfg.endpoint(m.endpoint)
        check_models(m.endpoint, ep, [x.name for x in m.models])
        return LLMTarget(ep.base_url, read_key(m.endpoint, ep), None, dict(ep.prices), m.endpoint)
    if not m.base_url:
        raise EndpointError("an LLM mutator needs an endpoint or a base_url")
    if operator_url is not None and m.base_url == operator_url:
        return LLMTarget(m.base_url, resolve_api_key(), None, dict(m.prices))
    cfg = cfg or load_endpoints()
    return LLMTarget(m.base_url, None, AddressPolicy(cfg.caller_urls.allow_private), dict(m.prices))
