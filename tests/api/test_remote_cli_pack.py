"""evoforge.client without a server: what a directory upload sends (never a secret, a link or a
hidden file), the event-stream parser and the one-line error messages."""
from __future__ import annotations

import io
import os
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from evoforge.client import Client, ServerError, UploadError, error_message, pack_dir, parse_sse

KEY = "sk-" + "A1b2C3d4E5f6G7h8I9j0K1l2"


def _sent(root) -> tuple[dict[str, str], list[str]]:
    body, skipped = pack_dir(root)
    with zipfile.ZipFile(io.BytesIO(body)) as z:
        for info in z.infolist():
            assert (info.external_attr >> 16) & 0o170000 in (0, 0o100000)  # regular files only
        return {n: z.read(n).decode() for n in z.namelist()}, skipped


def _problem(tmp_path):
    root = tmp_path / "prob"
    (root / "utils").mkdir(parents=True)
    (root / "initial_program.py").write_text("x = 1\n")
    (root / "evaluator.py").write_text("def evaluate(p):\n    return {'combined_score': 1.0}\n")
    (root / "utils" / "io.py").write_text("def read():\n    return 1\n")
    (root / "requirements.txt").write_text("numpy\n")
    return root


def test_pack_dir_sends_what_the_server_keeps_and_nothing_secret(tmp_path):
    root = _problem(tmp_path)
    (root / "config.yaml").write_text(yaml.safe_dump({
        "max_iterations": 7, "llm": {"api_key": KEY, "primary_model": "m",
                                     "api_base": "https://user:pw@llm.example/v1"}}))
    (root / ".env").write_text(f"OPENAI_API_KEY={KEY}\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("x")
    (root / "credentials.json").write_text("{}")
    (root / "notes.txt").write_text(f"my key is {KEY}\n")
    (root / "blob.bin").write_bytes(b"\xff\xfe\x00binary")
    (root / "config_old.yaml").write_text(f"api_key: {KEY}\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.pyc").write_bytes(b"\x00")
    outside = tmp_path / "outside.py"
    outside.write_text("SECRET = 1\n")
    os.symlink(outside, root / "link.py")
    os.symlink(tmp_path, root / "linkdir")

    sent, skipped = _sent(root)
    assert set(sent) == {"initial_program.py", "evaluator.py", "utils/io.py", "requirements.txt",
                         "config.yaml"}
    assert KEY not in "".join(sent.values()) and "pw@" not in sent["config.yaml"]
    config = yaml.safe_load(sent["config.yaml"])
    assert config["max_iterations"] == 7 and config["llm"]["primary_model"] == "m"
    assert "api_key" not in config["llm"]
    reasons = " | ".join(skipped)
    for name in (".env", ".git (directory, hidden)", "credentials.json", "notes.txt", "blob.bin", "config_old.yaml",
                 "link.py", "linkdir"):
        assert name in reasons, (name, skipped)
    assert "__pycache__" not in reasons
    assert "config.yaml: llm.api_key (a secret key, dropped)" in skipped


def test_pack_dir_keeps_a_clean_config_byte_for_byte(tmp_path):
    root = _problem(tmp_path)
    text = "# my comment\nmax_iterations: 3\n"
    (root / "config.yaml").write_text(text)
    sent, _ = _sent(root)
    assert sent["config.yaml"] == text


@pytest.mark.parametrize("name,text,why", [
    ("evoforge.toml", f'seed = "initial_program.py"\n[llm]\napi_key = "{KEY}"\n', "secret-looking"),
    ("evoforge.toml", 'seed = [\n', "not valid TOML"),
    ("config.yaml", "a: [\n", "not valid YAML"),
    ("config.yaml", f"prompt:\n  system_message: use {KEY}\n", "secret-looking value"),
])
def test_pack_dir_refuses_a_config_with_secrets_or_bad_syntax(tmp_path, name, text, why):
    root = _problem(tmp_path)
    (root / name).write_text(text)
    with pytest.raises(UploadError, match=why) as info:
        pack_dir(root)
    assert KEY not in str(info.value)


def test_pack_dir_leaves_out_what_is_over_the_limits(tmp_path):
    from evoforge.client import _limits

    root = _problem(tmp_path)
    (root / "big.csv").write_text("1," * (_limits()["file"] // 2 + 1))
    deep = root.joinpath(*["d"] * _limits()["depth"])
    deep.mkdir(parents=True)
    (deep / "x.py").write_text("x = 1\n")
    (root / "target").mkdir()                       # build output: not entered
    (root / "target" / "out.txt").write_text("x")
    sent, skipped = _sent(root)
    assert "big.csv" not in sent and not any(n.startswith("d/") for n in sent)
    assert "target/out.txt" not in sent
    reasons = " | ".join(skipped)
    assert "big.csv (larger than" in reasons and "deeper than" in reasons
    assert "target (directory, build output" in reasons


def test_parse_sse():
    lines = ["retry: 2000", "", ": heartbeat 15s", "", "event: progress", "id: 3",
             'data: {"evaluations": 3,', 'data:  "status": "running"}', "",
             "event: end", 'data: {"reason": "completed"}', ""]
    events = list(parse_sse(iter(lines)))
    assert events == [{"retry": 2000},
                      {"event": "progress", "data": {"evaluations": 3, "status": "running"}, "id": "3"},
                      {"event": "end", "data": {"reason": "completed"}, "id": None}]


def test_error_messages_are_one_line():
    assert error_message({"detail": [{"loc": ["body", "budget", "max_evaluations"], "msg": "too big"},
                                     {"loc": ["query", "limit"], "msg": "bad\nline"}]}, 422) == \
        "budget.max_evaluations: too big; query.limit: bad line"
    assert error_message({"detail": "no\r\nsuch campaign"}, 404) == "no such campaign"
    assert error_message({"detail": {"x": 1}}, 500) == '{"x": 1}'
    assert str(ServerError(401, "invalid API key")) == "HTTP 401: invalid API key"


def test_client_settings_and_key_hygiene(monkeypatch):
    monkeypatch.setenv("EVOFORGE_SERVER", "http://127.0.0.1:1/")
    monkeypatch.setenv("EVOFORGE_API_KEY", "evf_secretvalue")
    c = Client()
    assert c.server == "http://127.0.0.1:1" and "secret" not in repr(c)
    with pytest.raises(ValueError, match="header"):
        Client(key="evf_x\r\nX-Injected: 1")
    with pytest.raises(ValueError, match="http"):
        Client("file:///etc/passwd")
    with pytest.raises(ValueError, match="64 hex"):
        c.problem("../campaigns/1")
    with pytest.raises(ValueError, match="relative file path"):
        c.problem_file("a" * 64, "../../etc/passwd")
    with pytest.raises(ServerError) as info:
        c.campaigns()
    assert info.value.status == 0 and "cannot reach http://127.0.0.1:1" in str(info.value)
    assert "secretvalue" not in str(info.value)


def test_events_reconnect_after_a_dropped_connection_until_the_end():
    """A stream cut after one event (no `end`), then one the server ends as idle: the client
    reconnects both times (sending Last-Event-ID) and stops at the final `end`."""
    seen: list[dict] = []
    bodies = [b'retry: 50\n\nevent: progress\nid: 1\ndata: {"evaluations": 1}\n\n',
              b'retry: 50\n\nevent: end\ndata: {"reason": "idle", "campaign_id": 1}\n\n',
              b'event: progress\nid: 3\ndata: {"evaluations": 3}\n\n: heartbeat 1s\n\n'
              b'event: end\ndata: {"reason": "completed", "campaign_id": 1}\n\n']

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append({"path": self.path, "last": self.headers.get("Last-Event-ID"),
                         "auth": self.headers.get("Authorization")})
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(bodies[min(len(seen), len(bodies)) - 1])
            self.close_connection = True

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with Client(f"http://127.0.0.1:{srv.server_address[1]}", key="evf_k") as c:
            events = list(c.events(1))
    finally:
        srv.shutdown()
        srv.server_close()
    assert [(e["event"], e["data"].get("evaluations") or e["data"].get("reason")) for e in events] == \
        [("progress", 1), ("progress", 3), ("end", "completed")]
    assert len(seen) == 3 and seen[0]["path"] == "/api/v1/campaigns/1/events"
    assert seen[1]["last"] == "1" and all(s["auth"] == "Bearer evf_k" for s in seen)


def test_events_give_up_on_a_stream_that_keeps_closing_empty():
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(b"retry: 10\n\n: nothing\n\n")
            self.close_connection = True

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with Client(f"http://127.0.0.1:{srv.server_address[1]}") as c:
            with pytest.raises(ServerError, match="closed 3 times in a row"):
                list(c.events(1, reconnects=2))
    finally:
        srv.shutdown()
        srv.server_close()
