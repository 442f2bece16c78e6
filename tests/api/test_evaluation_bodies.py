"""`POST /evaluations` against hostile bodies, through a real server: what schemathesis found.

- The edge guard (api/guards.py) refuses a body over the server's limit (4 MiB) with 413 before
  the route sees it. A `code` may be 1,000,000 characters by the schema, which can be over 4 MiB
  as sent (non-ASCII, `\\u` escapes), so 413 is part of the contract of every operation that
  takes a body, and the OpenAPI document says so.
- Whatever the schema refuses is a 422, never a 200: no coercion (a `seed` of `true` or `"5"`
  was read as 1 and 5 by pydantic's lax mode), no NaN, no NUL, no lone surrogate, no depth.
"""
from __future__ import annotations

import json
import select
import socket

import pytest

from tests.security.test_http_edge import answer

MiB = 1024 * 1024
OK = {"task": "circle_packing", "code": "def pack_circles(n):\n    return []\n"}
LIMIT_MESSAGE = "request body too large: the limit is 4 MiB"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    from tests.api.conftest import start_server

    server = start_server(f"sqlite:///{tmp_path_factory.mktemp('evalbody') / 'e.db'}", execute=False)
    yield server
    server.stop()


def _port(srv) -> int:
    return int(srv.url.rsplit(":", 1)[1])


def _post_raw(port: int, path: str, body: bytes, *, chunked: bool) -> tuple[int, dict]:
    """POST `body` over a raw socket (Content-Length or chunked), and stop sending as soon as the
    server answers: an early 413 closes the connection, which an HTTP client reports as an error
    of its own instead of the answer. Returns (status, JSON body)."""
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
            "Connection: close",
            "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"]
    pieces = [body[i:i + 256 * 1024] for i in range(0, len(body), 256 * 1024)]
    frames = [(b"%x\r\n" % len(p)) + p + b"\r\n" for p in pieces] + [b"0\r\n\r\n"] if chunked else pieces
    pending = ("\r\n".join(head) + "\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setblocking(False)
    try:
        while pending or frames:
            readable, writable, _ = select.select([sock], [sock], [], 60)
            if readable:
                break
            assert writable, "the server neither reads nor answers"
            pending = pending or frames.pop(0)
            try:
                pending = pending[sock.send(pending):]
            except BlockingIOError:
                pass
    except (BrokenPipeError, ConnectionResetError):
        pass
    return answer(sock)


# -- the contract -----------------------------------------------------------------------------


def test_openapi_lists_413_on_every_operation_that_takes_a_body(srv):
    with srv.client() as c:
        doc = c.get(srv.url + "/openapi.json").json()
    with_body = {(method.upper(), path): op for path, ops in doc["paths"].items()
                 for method, op in ops.items() if "requestBody" in op}
    assert ("POST", "/api/v1/evaluations") in with_body and len(with_body) >= 4
    missing = sorted(k for k, op in with_body.items() if "413" not in op["responses"])
    assert not missing, f"these take a body but do not document 413: {missing}"
    for key, op in with_body.items():
        schema = op["responses"]["413"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorPublic"}, key
    description = with_body[("POST", "/api/v1/evaluations")]["responses"]["413"]["description"]
    assert "4 MiB" in description and "EVOFORGE_MAX_BODY_BYTES" in description
    seed = doc["components"]["schemas"]["EvaluationCreate"]["properties"]["seed"]
    assert seed["type"] == "integer"


# -- 413 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_4_mib_is_413_with_the_limit(srv, chunked):
    # 999,999 characters: valid by the schema (maxLength 1,000,000), but each "é" is six bytes
    # escaped, so the body is ~6 MB. The guard answers before the body is read in full.
    body = json.dumps({**OK, "code": "é" * 999_999}).encode()
    assert len(body) > 4 * MiB
    status, answer = _post_raw(_port(srv), "/api/v1/evaluations", body, chunked=chunked)
    assert status == 413, answer
    assert answer == {"detail": LIMIT_MESSAGE}


def test_a_body_under_the_limit_is_read_and_validated(srv):
    # the same field past its maxLength, in a body under 4 MiB: the model refuses it (422)
    body = json.dumps({**OK, "code": "x" * 1_000_001}).encode()
    assert len(body) < 4 * MiB
    status, answer = _post_raw(_port(srv), "/api/v1/evaluations", body, chunked=False)
    assert status == 422, answer
    assert answer["detail"][0]["loc"] == ["body", "code"]
    assert "at most 1000000 characters" in answer["detail"][0]["msg"]


# -- 422 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, words", [
    ({"seed": True}, "valid integer"),         # lax pydantic read this as seed 1, and ran it
    ({"seed": False}, "valid integer"),
    ({"seed": "5"}, "valid integer"),          # ... and this as 5
    ({"seed": "0x10"}, "valid integer"),
    ({"seed": 5.5}, "valid integer"),
    ({"seed": None}, "valid integer"),
    ({"seed": [5]}, "valid integer"),
    ({"seed": -1}, "greater than or equal to 0"),
    ({"seed": 2**31}, "less than or equal to 2147483647"),
    ({"seed": 1e300}, "less than or equal to 2147483647"),
    ({"seed": 10**30}, "64 bits"),
    ({"task": 5}, "valid string"),
    ({"task": ""}, "at least 1 character"),
    ({"task": "t" * 101}, "at most 100 characters"),
    ({"code": ""}, "at least 1 character"),
    ({"code": ["x = 1"]}, "valid string"),
    ({"code": "x = 1\x00"}, "NUL"),
    ({"params": [26]}, "valid dictionary"),
    ({"params": "n=26"}, "valid dictionary"),
    ({"params": {"n": 10**30}}, "64 bits"),
    ({"params": {"n\x00": 26}}, "NUL"),
    ({"params": {"deep": json.loads("[" * 40 + "]" * 40)}}, "nested deeper"),
    ({"colour": "red"}, "Extra inputs are not permitted"),
])
def test_schema_violating_bodies_are_422(srv, change, words):
    with srv.client() as c:
        r = c.post("/evaluations", json={**OK, **change})
    assert r.status_code == 422, (change, r.status_code, r.text[:300])
    assert words in json.dumps(r.json()["detail"]), r.text[:300]


@pytest.mark.parametrize("raw, words", [
    (b'{"task": "circle_packing", "code": "x", "seed": NaN}', "finite"),
    (b'{"task": "circle_packing", "code": "x", "seed": Infinity}', "finite"),
    (b'{"task": "circle_packing", "code": "x", "seed": -Infinity}', "finite"),
    (b'{"task": "circle_packing", "code": "x", "seed": 1e400}', "finite"),
    (b'{"task": "circle_packing", "code": "x", "params": {"n": NaN}}', "finite"),
    (b'{"task": "circle_packing", "code": "x = \\"\\ud800\\""}', "lone surrogates"),
    (b'{"task": "\\udfff", "code": "x"}', "lone surrogates"),
    (b'{"task": "circle_packing", "code": "x", "params": {"\\ud800": 1}}', "lone surrogates"),
    (b'{"task": "circle_packing", "code": "x = 1\\u0000"}', "NUL"),
    (b'{"task": "circle_packing", "code": "\xff\xfe"}', "json_invalid"),
    (b'{"task": "circle_packing", "code": "x"', "json_invalid"),
])
def test_non_json_values_are_422(srv, raw, words):
    with srv.client() as c:
        r = c.post("/evaluations", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, (raw, r.status_code, r.text[:300])
    assert words in json.dumps(r.json()["detail"]), r.text[:300]


def test_integral_seeds_are_served(srv):
    # the controls: the same body with a real integer is evaluated (a 200 whatever the program
    # scores), and 5.0, an integer to JSON Schema, is the same request as 5
    with srv.client() as c:
        first = c.post("/evaluations", json={**OK, "seed": 5})
        again = c.post("/evaluations", json={**OK, "seed": 5.0})
    assert first.status_code == 200, first.text
    assert again.status_code == 200, again.text
    assert again.json()["code_hash"] == first.json()["code_hash"]
    assert again.json()["task_key"] == first.json()["task_key"]
