"""LLM endpoints are the operator's: a key holder never gets the server's key sent to a URL of
their choosing, nor the server to connect to loopback/private addresses for them.

Through the real server (uvicorn on loopback, embedded runner) and a recording listener that
speaks the OpenAI protocol: what reached it, and with which Authorization header.
"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from evoforge.db import apikeys
from evoforge.db.engine import session_factory
from tests.security.conftest import ROOT, wait_for

SERVER_KEY = "sk-server-secret-0123456789"      # EVOFORGE_LLM_API_KEY
OPENAI_KEY = "sk-openai-secret-9876543210"      # OPENAI_API_KEY
TEAM_KEY = "sk-team-endpoint-key-5555"          # the operator's endpoint key (TEAM_LLM_KEY)
SECRETS = (SERVER_KEY, OPENAI_KEY, TEAM_KEY)


def body(mutator: dict, evals: int = 3) -> dict:
    return {"task": "circle_packing", "params": {"n": 5}, "parallel": 1,
            "budget": {"max_evaluations": evals}, "mutator": {"kind": "llm", **mutator}}


@pytest.fixture
def env(monkeypatch):
    """The server's own keys are in its environment, as in a real deployment."""
    monkeypatch.setenv("EVOFORGE_LLM_API_KEY", SERVER_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_ORG_ID", "org-server")
    monkeypatch.setenv("TEAM_LLM_KEY", TEAM_KEY)
    monkeypatch.delenv("EVOFORGE_LLM_ENDPOINTS", raising=False)
    return monkeypatch


@pytest.fixture
def endpoints(env, tmp_path):
    """endpoints(toml_text): the operator's endpoint file, named by EVOFORGE_LLM_ENDPOINTS."""
    def write(text: str) -> None:
        path = tmp_path / f"endpoints-{time.monotonic_ns()}.toml"
        path.write_text(text)
        env.setenv("EVOFORGE_LLM_ENDPOINTS", str(path))
    return write


@pytest.fixture
def service(live_server, env):
    """A running server with a key for project 'research' and one for project 'other'."""
    srv = live_server()
    sessions = session_factory(srv.db_url)
    srv.research = srv.client(apikeys.create_key(sessions, "research")[0])
    srv.other = srv.client(apikeys.create_key(sessions, "other")[0])
    return srv


def no_secret_reached(lst) -> None:
    for r in lst.requests:
        seen = " ".join(f"{k}: {v}" for k, v in r.headers.items()) + r.body.decode(errors="replace")
        for secret in SECRETS:
            assert secret not in seen, f"{secret} reached {r.path}"


def assert_refused(client, mutator: dict, *needles: str) -> str:
    r = client.post("/campaigns", json=body(mutator))
    assert r.status_code == 422, r.text
    text = r.text
    for needle in needles:
        assert needle in text, text
    assert client.get("/campaigns").json()["total"] == 0
    return text


# -- (a) a caller's URL: refused, and nothing (certainly no key) reaches it ---------------------


def test_caller_base_url_is_refused_without_operator_permission(service, listener):
    text = assert_refused(service.research, {"base_url": listener.url, "models": [{"name": "m"}]},
                          "mutator.base_url is not allowed", "/api/v1/endpoints")
    assert SERVER_KEY not in text
    time.sleep(1.0)
    assert listener.requests == []


@pytest.mark.parametrize("url", [
    "{listener}",                                   # 127.0.0.1
    "http://localhost:{port}/v1",                   # a name that resolves to loopback
    "http://0x7f.1:{port}/v1",                      # hex/short IPv4 spelling of 127.0.0.1
    "http://2130706433:{port}/v1",                  # decimal
    "http://0177.0.0.1:{port}/v1",                  # octal
    "http://[::ffff:127.0.0.1]:{port}/v1",          # IPv4-mapped IPv6
    "http://[::1]:{port}/v1",
    "http://0.0.0.0:{port}/v1",                     # unspecified (connects to this host)
    "http://10.1.2.3:{port}/v1",                    # private
    "http://192.168.0.1:{port}/v1",
    "http://169.254.169.254/latest/meta-data",      # link-local: cloud metadata
    "http://[fe80::1]:{port}/v1",
    "http://evil@127.0.0.1:{port}/v1",              # userinfo trick
    "http://evil.example@localhost:{port}/v1",
    "http://224.0.0.1:{port}/v1",                   # multicast
])
def test_caller_urls_to_internal_addresses_are_refused(service, listener, endpoints, url):
    endpoints('[caller_urls]\nprojects = ["research"]\nallow_private = false\n')
    url = url.format(listener=listener.url, port=listener.port)
    text = assert_refused(service.research, {"base_url": url}, "base_url")
    assert any(why in text for why in ("refused", "user:password", "not a valid URL")), text
    time.sleep(0.3)
    assert listener.requests == []


def test_caller_urls_are_per_project(service, listener, endpoints):
    endpoints('[caller_urls]\nprojects = ["research"]\nallow_private = true\n')
    assert_refused(service.other, {"base_url": listener.url}, "mutator.base_url is not allowed")
    assert listener.requests == []


def test_a_campaign_names_endpoint_or_base_url_not_both(service, listener, endpoints):
    endpoints(f'[endpoints.team]\nbase_url = "{listener.url}"\nmodels = ["m"]\n')
    assert_refused(service.research, {"endpoint": "team", "base_url": listener.url},
                   "not both")
    assert_refused(service.research, {"models": [{"name": "m"}]}, "needs mutator.endpoint", "team")


# -- (b) the operator's endpoint: the key goes there, and only there ----------------------------


TEAM = """
[endpoints.team]
base_url = "{url}"
key_env = "TEAM_LLM_KEY"
models = ["m-allowed", "m-other"]
prices = {{ "m-allowed" = [1000.0, 2000.0] }}
"""


def test_operator_endpoint_gets_its_key(service, listener, endpoints):
    endpoints(TEAM.format(url=listener.url))
    r = service.research.post("/campaigns", json=body(
        {"endpoint": "team", "models": [{"name": "m-allowed"}]}))
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    wait_for(lambda: any(q.path.endswith("/chat/completions") for q in listener.requests), 60)
    assert set(listener.authorizations()) == {f"Bearer {TEAM_KEY}"}
    assert all(q.headers.get("openai-organization") in (None, "org-server") for q in listener.requests)
    c = wait_for(lambda: (lambda c: c if c["status"] in ("completed", "failed") else None)(
        service.research.get(f"/campaigns/{cid}").json()), 120)
    assert c["status"] == "completed", c
    assert c["mutator"]["endpoint"] == "team" and c["mutator"].get("base_url") is None
    assert c["cost_usd"] > 0                       # the operator's prices, not the caller's
    shown = service.research.get(f"/campaigns/{cid}").text
    for secret in SECRETS:
        assert secret not in shown
    assert "TEAM_LLM_KEY" not in shown and listener.url not in shown


def test_models_and_prices_are_the_operators(service, listener, endpoints):
    endpoints(TEAM.format(url=listener.url))
    assert_refused(service.research, {"endpoint": "team", "models": [{"name": "gpt-expensive"}]},
                   "gpt-expensive", "not allowed", "m-allowed")
    assert_refused(service.research, {"endpoint": "team", "models": [{"name": "m-allowed"}],
                                      "prices": {"m-allowed": [0, 0]}}, "prices")
    assert_refused(service.research, {"endpoint": "nope", "models": [{"name": "m-allowed"}]},
                   "unknown LLM endpoint 'nope'", "team")
    assert listener.requests == []


def test_endpoint_listing_shows_names_and_models_only(service, listener, endpoints):
    endpoints(TEAM.format(url=listener.url) + f"""
[endpoints.private]
base_url = "{listener.url}"
models = ["*"]
projects = ["other"]
""")
    r = service.research.get("/endpoints")
    assert r.status_code == 200, r.text
    assert r.json() == {"endpoints": [{"name": "team", "models": ["m-allowed", "m-other"]}],
                        "caller_urls": False}
    assert str(listener.port) not in r.text and "TEAM_LLM_KEY" not in r.text
    assert [e["name"] for e in service.other.get("/endpoints").json()["endpoints"]] == \
        ["private", "team"]
    # an endpoint reserved for another project is unknown to this one
    assert_refused(service.research, {"endpoint": "private", "models": [{"name": "x"}]},
                   "unknown LLM endpoint 'private'")


def test_a_key_in_the_endpoint_file_is_refused(service, listener, endpoints):
    endpoints(f'[endpoints.team]\nbase_url = "{listener.url}"\nmodels = ["m"]\n'
              f'key = "{TEAM_KEY}"\n')
    r = service.research.post("/campaigns", json=body({"endpoint": "team",
                                                       "models": [{"name": "m"}]}))
    assert r.status_code == 503 and TEAM_KEY not in r.text, r.text
    assert service.research.get("/endpoints").status_code == 503


# -- (c) a caller URL the operator allows: requests, but no key ----------------------------------


def test_allowed_caller_url_gets_no_server_key(service, listener, endpoints):
    endpoints('[caller_urls]\nprojects = ["research"]\nallow_private = true\n')
    r = service.research.post("/campaigns", json=body({"base_url": listener.url,
                                                       "models": [{"name": "m"}]}))
    assert r.status_code == 201, r.text
    wait_for(lambda: any(q.path.endswith("/chat/completions") for q in listener.requests), 60)
    assert listener.authorizations() and set(listener.authorizations()) == {""}
    assert all("openai-organization" not in q.headers for q in listener.requests)
    no_secret_reached(listener)


# -- (d) redirects are not followed, with or without a key --------------------------------------


def test_operator_endpoint_redirect_is_not_followed(service, listener_factory, endpoints):
    first, second = listener_factory(), listener_factory()
    first.status, first.location = 307, second.url + "/chat/completions"
    endpoints(TEAM.format(url=first.url))
    r = service.research.post("/campaigns", json=body(
        {"endpoint": "team", "models": [{"name": "m-allowed"}]}, evals=3))
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    wait_for(lambda: service.research.get(f"/campaigns/{cid}").json()["status"]
             in ("completed", "failed"), 120)
    assert any(q.path.endswith("/chat/completions") for q in first.requests)
    assert second.requests == []
    progs = service.research.get(f"/campaigns/{cid}/programs").json()["items"]
    assert progs and any(p["iteration"] > 0 for p in progs)


def test_redirect_is_a_clear_permanent_error(listener_factory):
    from evoforge.worker.llm_client import OpenAIClient, PermanentLLMError

    first, second = listener_factory(), listener_factory()
    first.status, first.location = 302, second.url + "/chat/completions"
    client = OpenAIClient(first.url, api_key=TEAM_KEY, max_retries=2, timeout_s=5)
    with pytest.raises(PermanentLLMError, match="redirect") as err:
        client.complete("m", [{"role": "user", "content": "hi"}])
    assert err.value.status == 302 and err.value.attempts == 1
    assert len(first.requests) == 1 and second.requests == []
    client.close()


# -- (e) the worker side: a stored base_url never gets a key (Celery and embedded alike) --------


def _stored_mutator(url: str, sessions=None, **runtime):
    from evoforge.evaluators.base import get_task, parse_params
    from evoforge.worker.llm import make_llm_mutator
    from evoforge.db.campaign_config import CampaignSpec

    spec = CampaignSpec.model_validate(body({"base_url": url, "models": [{"name": "m"}]}))
    task = get_task("circle_packing")
    mut = make_llm_mutator(spec, task, parse_params(task, spec.params), sessions, 0, **runtime)
    return mut._complete.__self__   # the OpenAIClient (build_llm_mutator's docstring)


def test_stored_base_url_gets_no_key_in_a_worker(env, endpoints, listener):
    endpoints('[caller_urls]\nallow_private = true\n')     # reachable, so we see what is sent
    client = _stored_mutator(listener.url)
    client.complete("m", [{"role": "user", "content": "hi"}])
    assert listener.authorizations() == [""]
    no_secret_reached(listener)
    # the local CLI, whose user is the operator, says in-process that this URL is theirs
    trusted = _stored_mutator(listener.url, operator_url=listener.url)
    trusted.complete("m", [{"role": "user", "content": "hi"}])
    assert listener.authorizations()[-1] == f"Bearer {SERVER_KEY}"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "0x7f.1"])
def test_stored_internal_url_is_refused_at_connect_time(env, listener, host):
    """A stored URL that slipped past the create-time check (an older row, DNS that changed
    since) is checked again on the address actually connected to."""
    from evoforge.worker.llm_client import PermanentLLMError

    client = _stored_mutator(f"http://{host}:{listener.port}/v1")
    with pytest.raises(PermanentLLMError, match="address policy"):
        client.complete("m", [{"role": "user", "content": "hi"}])
    assert listener.requests == []


def test_dns_answer_is_checked_when_connecting(monkeypatch, listener):
    """Rebinding: a name that was public when checked and is loopback when connected to."""
    import socket

    from evoforge.worker.endpoints import AddressPolicy, BlockedAddress, GuardedBackend

    real = socket.getaddrinfo
    answers = iter(["93.184.215.14", "127.0.0.1"])

    def rebinding(host, *a, **kw):
        if host == "rebind.example":
            return real(next(answers), *a, **kw)
        return real(host, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    from evoforge.worker.endpoints import check_caller_url
    check_caller_url(f"http://rebind.example:{listener.port}/v1", AddressPolicy())  # public now
    with pytest.raises(BlockedAddress, match="loopback"):
        GuardedBackend(AddressPolicy()).connect_tcp("rebind.example", listener.port, 2.0)
    assert listener.requests == []


# -- the local CLI keeps its --llm-base-url and the key from its environment ---------------------


def test_cli_run_sends_the_users_key_to_the_users_url(tmp_path, listener):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "EVOFORGE_HOME": str(tmp_path / "h"),
           "EVOFORGE_LLM_API_KEY": SERVER_KEY}
    out = subprocess.run([sys.executable, "-m", "evoforge.cli", "run", "circle_packing", "--param", "n=5",
                          "--iterations", "2", "--json", "--db", f"sqlite:///{tmp_path / 'cli.db'}",
                          "--llm-base-url", listener.url, "--model", "m"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert listener.authorizations() and set(listener.authorizations()) == {f"Bearer {SERVER_KEY}"}


# -- pure logic: the address policy and the file -------------------------------------------------


@pytest.mark.parametrize("addr", [
    "127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "100.64.0.1", "169.254.169.254",
    "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1",
    "fec0::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::7f00:1",
    "2002:7f00:1::",            # 6to4 around 127.0.0.1
    "64:ff9b::a9fe:a9fe",       # NAT64 around 169.254.169.254
])
def test_address_policy_refuses_internal_addresses(addr):
    import ipaddress

    from evoforge.worker.endpoints import AddressPolicy

    assert AddressPolicy().refusal(ipaddress.ip_address(addr)), addr


def test_address_policy_allows_public_and_opt_in_private():
    import ipaddress

    from evoforge.worker.endpoints import AddressPolicy

    ip = ipaddress.ip_address
    assert AddressPolicy().refusal(ip("93.184.215.14")) is None
    assert AddressPolicy().refusal(ip("2606:4700::1111")) is None
    private = AddressPolicy(allow_private=True)
    assert private.refusal(ip("127.0.0.1")) is None and private.refusal(ip("10.1.2.3")) is None
    for never in ("169.254.169.254", "0.0.0.0", "224.0.0.1", "fe80::1"):   # never, even then
        assert private.refusal(ip(never)), never


def test_endpoint_key_comes_from_the_named_file(tmp_path, env):
    from evoforge.worker.endpoints import EndpointError, load_endpoints, read_key

    (tmp_path / "key").write_text(TEAM_KEY + "\n")
    path = tmp_path / "e.toml"
    path.write_text(f'[endpoints.f]\nbase_url = "https://llm.example/v1"\nmodels = ["m"]\n'
                    f'key_file = "{tmp_path / "key"}"\n[endpoints.e]\nbase_url = '
                    f'"https://llm.example/v1"\nmodels = ["m"]\nkey_env = "UNSET_KEY_VAR"\n')
    cfg = load_endpoints(str(path))
    assert read_key("f", cfg.endpoint("f")) == TEAM_KEY
    with pytest.raises(EndpointError, match="UNSET_KEY_VAR is not set"):
        read_key("e", cfg.endpoint("e"))
