"""A client for an EvoForge server: problems, campaigns, programs and the live event stream.

    >>> from evoforge.client import Client
    >>> with Client("http://127.0.0.1:8000", key="evf_...") as c:   # or $EVOFORGE_SERVER / _API_KEY
    ...     problem = c.upload_problem("examples/my_problem")        # a directory, archive or {path: text}
    ...     campaign = c.create_campaign(problem=problem["id"], mutator={"kind": "local"},
    ...                                  budget={"max_evaluations": 21})
    ...     for event in c.events(campaign["id"]):                     # until the campaign ends
    ...         print(event["event"], event["data"].get("best_score"))

It imports only httpx and the standard library, so a script or a notebook can use it without the
server's dependencies. Uploading a directory reads it with the server's own file rules
(evaluators/openevolve/files.py, imported then): whatever the server would skip or refuse is never
sent at all, neither hidden files, links, secret-looking names or text, nor a `config.yaml`'s API
keys (the config goes re-serialized without them). Every failure is a `ServerError` whose message
is one line: the server's `detail`, or why the server could not be reached.
"""
from __future__ import annotations

import io
import json
import os
import re
import stat
import time
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import quote

import httpx

SERVER_ENV = "EVOFORGE_SERVER"
KEY_ENV = "EVOFORGE_API_KEY"
DEFAULT_SERVER = "http://127.0.0.1:8000"
FINAL_STATUSES = ("completed", "cancelled", "failed")
_END_FINAL = (*FINAL_STATUSES, "deleted")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_KEY = re.compile(r"^[\x21-\x7e]{1,512}$")
_MESSAGE_CHARS = 2000
_ARCHIVES = {".zip": "application/zip", ".tar": "application/x-tar", ".tgz": "application/gzip",
             ".tar.gz": "application/gzip"}
_NATIVE_CONFIG = "evoforge.toml"


class ServerError(Exception):
    """The server refused a request, answered something unusable, or could not be reached
    (`status` 0). `message` is one line, as the server's `detail` says it."""

    def __init__(self, status: int, message: str):
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return self.message if self.status == 0 else f"HTTP {self.status}: {self.message}"


class UploadError(ValueError):
    """A problem directory that cannot be sent as it is (one line: which file and why)."""


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS] + "..."


def error_message(body: Any, status: int) -> str:
    """One readable line from an error answer's JSON: `detail` as a string, or a validation
    error list as `loc: msg; loc: msg` (the location without the leading `body`)."""
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = [str(p) for p in item.get("loc") or () if p != "body"]
                parts.append(f"{'.'.join(loc)}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(json.dumps(item, default=str) if not isinstance(item, str) else item)
        detail = "; ".join(parts)
    elif not isinstance(detail, str):
        detail = json.dumps(detail, default=str)
    return _one_line(detail) or f"the server answered {status}"


class ProgramList(list):
    """A page of program summaries (`Client.programs`): a list, plus the keyset cursor of the
    next page (`next_after`, None on the last) and the page's `total` under its filters."""

    def __init__(self, items: Iterable[dict[str, Any]] = (), *, next_after: str | None = None,
                 total: int | None = None):
        super().__init__(items)
        self.next_after = next_after
        self.total = total


class Client:
    """A session with one EvoForge server (REST API v1), authenticated by one API key.

    `server` defaults to $EVOFORGE_SERVER, else http://127.0.0.1:8000; `key` to
    $EVOFORGE_API_KEY (none: the server must run open, on loopback). `timeout` is in seconds, per
    request (the event stream waits for heartbeats instead). Use it as a context manager, or
    call `close()`.
    """

    def __init__(self, server: str | None = None, key: str | None = None, *, timeout: float = 30):
        server = (server or os.environ.get(SERVER_ENV) or DEFAULT_SERVER).strip().rstrip("/")
        if not server.startswith(("http://", "https://")):
            raise ValueError(f"the server must be an http:// or https:// URL, not {server!r}")
        key = key if key is not None else os.environ.get(KEY_ENV)
        headers = {"Accept": "application/json", "User-Agent": "evoforge-client"}
        if key:
            if not _KEY.match(key):
                raise ValueError("the API key has characters an HTTP header cannot carry")
            headers["Authorization"] = f"Bearer {key}"
        self.server = server
        self.timeout = float(timeout)
        # No redirects: the key stays with the server it was given for.
        self._http = httpx.Client(base_url=f"{server}/api/v1", headers=headers, timeout=timeout,
                                  follow_redirects=False)

    def __repr__(self) -> str:  # never the key
        return f"Client({self.server!r})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    # -- HTTP --------------------------------------------------------------------------------

    def _unreachable(self, exc: httpx.HTTPError) -> ServerError:
        if isinstance(exc, httpx.TimeoutException):
            return ServerError(0, f"no answer from {self.server} within {self.timeout:g} s")
        reason = str(exc) or type(exc).__name__
        return ServerError(0, f"cannot reach {self.server}: {_one_line(reason)}")

    def _error(self, response: httpx.Response) -> ServerError:
        status = response.status_code
        if 300 <= status < 400:
            where = response.headers.get("location", "?")
            return ServerError(status, f"redirected to {_one_line(where)}: give that as the server")
        try:
            body = response.json()
        except ValueError:
            text = _one_line(response.text[:300]) or response.reason_phrase
            return ServerError(status, f"{text} (not an EvoForge answer: is {self.server} the server?)")
        return ServerError(status, error_message(body, status))

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 300:
            raise self._error(response)
        return response

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        response = self._send(method, path, **kw)
        if response.status_code == 204:
            return None
        try:
            return response.json()
        except ValueError:
            raise ServerError(response.status_code, f"the answer to {method} {path} is not JSON "
                              f"(is {self.server} an EvoForge server?)") from None

    # -- problems ----------------------------------------------------------------------------

    def upload_problem(self, path_or_files: str | os.PathLike[str] | Mapping[str, str],
                       name: str | None = None, *, sandbox: str | None = None) -> dict[str, Any]:
        """Store a problem on the server and return it (`id` is its content digest).

        `path_or_files`: a problem directory (OpenEvolve's layout: initial_program.py,
        evaluator.py, optional config.yaml and data files; or the native evoforge.toml layout),
        a .zip / .tar / .tar.gz archive of one, or a `{relative path: text}` mapping. From a
        directory, only what the server would keep is sent (module docstring); the answer's
        `client_skipped` lists what was left out here and why. `name` defaults to the
        directory's name. `sandbox` (fork, subprocess, docker) is where the requirements are
        checked. The same content again answers the same id (`created` False).
        """
        params: dict[str, str] = {}
        skipped: list[str] = []
        if isinstance(path_or_files, Mapping):
            body = json.dumps(dict(path_or_files)).encode()
            content_type = "application/json"
        else:
            path = Path(path_or_files)
            if path.is_dir():
                body, skipped = pack_dir(path)
                content_type = "application/zip"
                name = path.resolve().name if name is None else name
            else:
                body, content_type = _read_archive(path)
        if name:
            params["name"] = name
        if sandbox:
            params["sandbox"] = sandbox
        response = self._send("POST", "/problems", content=body, params=params,
                              headers={"Content-Type": content_type})
        out = response.json()
        out["created"] = response.status_code == 201
        out["client_skipped"] = skipped
        return out

    def problems(self, *, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """The stored problems of your project (summaries), newest first."""
        return self._json("GET", "/problems", params={"limit": limit, "offset": offset})["items"]

    def problem(self, problem_id: str) -> dict[str, Any]:
        """One problem: name, layout, seed and evaluator paths, files, config, report."""
        return self._json("GET", f"/problems/{_digest(problem_id)}")

    def delete_problem(self, problem_id: str) -> None:
        """Delete a problem (refused, 409, while a campaign uses it)."""
        self._json("DELETE", f"/problems/{_digest(problem_id)}")

    def problem_files(self, problem_id: str) -> list[dict[str, Any]]:
        """The problem's files: `[{path, bytes}]`."""
        return self._json("GET", f"/problems/{_digest(problem_id)}/files")

    def problem_file(self, problem_id: str, path: str) -> dict[str, Any]:
        """One file of a problem: `{path, text, bytes}`."""
        parts = path.split("/")
        if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"not a relative file path: {path!r}")
        return self._json("GET", f"/problems/{_digest(problem_id)}/files/{quote(path, safe='/')}")

    # -- campaigns and programs --------------------------------------------------------------

    def create_campaign(self, **spec: Any) -> dict[str, Any]:
        """Create a campaign (POST /campaigns, docs/api.md). With `problem=<id>` the problem's
        config gives the defaults and the fields given here override them, e.g.
        `create_campaign(problem=pid, mutator={"kind": "local"}, budget={"max_evaluations": 21})`.
        """
        return self._json("POST", "/campaigns", json=spec)

    def campaigns(self, status: str | None = None, *, limit: int = 50,
                  offset: int = 0) -> list[dict[str, Any]]:
        """Your project's campaigns, newest first, optionally only those of one status."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return self._json("GET", "/campaigns", params=params)["items"]

    def campaign(self, campaign_id: int) -> dict[str, Any]:
        """One campaign: status, counts, seed and best scores, `error` when it failed."""
        return self._json("GET", f"/campaigns/{int(campaign_id)}")

    def cancel(self, campaign_id: int) -> dict[str, Any]:
        """End a queued, running or paused campaign for good (what it found is kept)."""
        return self._json("POST", f"/campaigns/{int(campaign_id)}/cancel")

    def best(self, campaign_id: int) -> dict[str, Any]:
        """The campaign's best program (`code`, `score`, `metrics`, ...); LookupError when it
        has none yet."""
        best_id = self.campaign(campaign_id).get("best_program_id")
        if best_id is None:
            raise LookupError(f"campaign {int(campaign_id)} has no scored program yet")
        return self.program(best_id)

    def programs(self, campaign_id: int, *, sort: str = "score", status: str | None = None,
                 island: int | None = None, limit: int = 50, offset: int = 0,
                 after: str | None = None) -> "ProgramList":
        """A page of the campaign's programs (summaries, each with `pruned`); `sort`: score,
        -score, iteration, -iteration; `status`: ok, error, timeout, ... . A list, with
        `next_after` (pass it as `after` for the next page: keyset pagination, as fast a
        million programs deep as on the first page; None on the last page) and `total`.
        `after` and `offset` are one or the other; `iter_programs` walks every page."""
        params: dict[str, Any] = {"sort": sort, "limit": limit}
        if after is not None:
            params["after"] = after
        if offset:
            params["offset"] = offset
        if status:
            params["status"] = status
        if island is not None:
            params["island"] = island
        page = self._json("GET", f"/campaigns/{int(campaign_id)}/programs", params=params)
        return ProgramList(page["items"], next_after=page.get("next_after"),
                           total=page.get("total"))

    def iter_programs(self, campaign_id: int, *, sort: str = "score", status: str | None = None,
                      island: int | None = None, page_size: int = 200) -> Iterator[dict[str, Any]]:
        """Every program of the campaign under the filters, page after page by keyset (`after`):
        each is yielded once even while the campaign commits new programs meanwhile (those
        may or may not be included, by where they sort)."""
        after: str | None = None
        while True:
            page = self.programs(campaign_id, sort=sort, status=status, island=island,
                                 limit=page_size, after=after)
            yield from page
            if page.next_after is None or not page:
                return
            after = page.next_after

    def program(self, program_id: int) -> dict[str, Any]:
        """One program: code, metrics, evaluation, parent and diff."""
        return self._json("GET", f"/programs/{int(program_id)}")

    def events(self, campaign_id: int, *, max_seconds: float | None = None,
               reconnects: int = 5) -> Iterator[dict[str, Any]]:
        """The campaign's live progress: `{"event": "progress", "data": <campaign>}` on each
        change, then `{"event": "end", "data": {"reason": ...}}` once it is completed, cancelled,
        failed or deleted, and the iterator stops. A dropped connection (or the server ending
        an idle stream) is reconnected; after `reconnects` failed tries in a row it raises
        ServerError. `max_seconds` ends it after that long, whatever the campaign does."""
        path = f"/campaigns/{int(campaign_id)}/events"
        started, failures, delay = time.monotonic(), 0, 2.0
        last_id: str | None = None
        while True:
            params: dict[str, Any] = {}
            if max_seconds is not None:
                left = max_seconds - (time.monotonic() - started)
                if left <= 0:
                    return
                params["max_seconds"] = left
            headers = {"Accept": "text/event-stream"}
            if last_id:
                headers["Last-Event-ID"] = last_id
            # Heartbeats come every 15 s: a minute of silence is a dead connection.
            timeout = httpx.Timeout(self.timeout, read=max(60.0, self.timeout))
            failures += 1  # until this connection brings an event
            try:
                with self._http.stream("GET", path, params=params, headers=headers,
                                       timeout=timeout) as response:
                    if response.status_code >= 300:
                        response.read()
                        raise self._error(response)
                    for event in parse_sse(response.iter_lines()):
                        if "retry" in event:
                            delay = min(max(event["retry"] / 1000, 0.1), 30.0)
                            continue
                        failures = 0
                        last_id = event.get("id") or last_id
                        if event["event"] == "end":
                            data = event["data"] if isinstance(event["data"], dict) else {}
                            reason = data.get("reason")
                            if reason in _END_FINAL or (reason == "max_seconds" and max_seconds):
                                yield event
                                return
                            break  # idle: the server ended the stream, the campaign goes on
                        yield event
            except httpx.HTTPError as exc:
                if failures > reconnects:
                    raise self._unreachable(exc) from None
            if failures > reconnects:
                raise ServerError(0, f"the event stream of campaign {int(campaign_id)} closed "
                                     f"{failures} times in a row without an event")
            time.sleep(delay)


def parse_sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Server-sent events from text lines: `{"event", "data", "id"}` each (data parsed as
    JSON where it is), `{"retry": ms}` for a retry field; comments (heartbeats) are skipped."""
    event, data, event_id = "message", [], None
    for line in lines:
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    value: Any = json.loads(text)
                except ValueError:
                    value = text
                yield {"event": event, "data": value, "id": event_id}
            event, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
        elif field == "retry" and value.isdigit():
            yield {"retry": int(value)}


def _digest(problem_id: str) -> str:
    if not isinstance(problem_id, str) or not _DIGEST.match(problem_id):
        raise ValueError(f"a problem id is 64 hex digits, not {problem_id!r}")
    return problem_id


def _read_archive(path: Path) -> tuple[bytes, str]:
    name = path.name.lower()
    content_type = next((t for suffix, t in sorted(_ARCHIVES.items(), key=lambda kv: -len(kv[0]))
                         if name.endswith(suffix)), None)
    if content_type is None:
        raise UploadError(f"{path}: not a directory, nor a .zip, .tar or .tar.gz archive")
    limit = _limits()["upload"]
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise UploadError(f"{path}: not a regular file")
        if st.st_size > limit:
            raise UploadError(f"{path}: {st.st_size} bytes, over the {limit >> 20} MiB upload limit")
        return path.read_bytes(), content_type
    except OSError as exc:
        raise UploadError(f"{path}: {exc.strerror or exc}") from None


def _limits() -> dict[str, int]:
    """The server's limits (evaluators/openevolve/package.py), to refuse here before sending."""
    from evoforge.evaluators.openevolve import package as p

    return {"upload": p.MAX_UPLOAD_BYTES, "total": p.MAX_TOTAL_BYTES, "file": p.MAX_FILE_BYTES,
            "files": p.MAX_FILES, "depth": p.MAX_DEPTH}


def pack_dir(root: str | os.PathLike[str]) -> tuple[bytes, list[str]]:
    """A zip of what may be sent of problem directory `root`, and "path (reason)" for each file
    left out. The directory is read as `package_from_dir` reads it (files.walk: links never
    followed; hidden, secret-looking, cache and build-output directories not entered; the same
    limits), and never sent: hidden or secret-looking names, non-UTF-8 or secret-looking text,
    config files other than the top-level config.yaml, which goes with its secret keys dropped
    (redact.py). An evoforge.toml or config.yaml with a secret left in it is an UploadError:
    nothing is sent."""
    from evoforge.evaluators.openevolve.files import refusal, shown, walk
    from evoforge.evaluators.openevolve.package import META

    root = Path(root)
    if not root.is_dir():
        raise UploadError(f"{root}: not a directory")
    limits = _limits()
    files: dict[str, bytes] = {}
    skipped: list[str] = []
    total = 0
    for rel, st, why in walk(root):
        if why is None and rel not in META:
            why = refusal(rel)
        if why is None:
            if len(files) >= limits["files"]:
                why = f"over {limits['files']} files"
            elif st.st_size > limits["file"]:
                why = f"larger than {limits['file'] >> 20} MiB"
            elif total + st.st_size > limits["total"]:
                why = f"over {limits['total'] >> 20} MiB in all"
        if why is None:
            data, why = _read_text(root / rel, rel, limits["file"], skipped)
        if why:
            skipped.append(f"{shown(rel)} ({why})")
            continue
        files[rel] = data
        total += len(data)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for rel in sorted(files):
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, files[rel])
    return buf.getvalue(), skipped


def _read_text(path: Path, rel: str, max_bytes: int,
               skipped: list[str]) -> tuple[bytes, str | None]:
    """The bytes to send of one file (a config cleaned: its dropped keys go to `skipped`), or
    why it is not sent."""
    from evoforge.evaluators.openevolve.files import refusal
    from evoforge.evaluators.openevolve.package import CONFIG_NAMES, META

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return b"", exc.strerror or "unreadable"
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return b"", "not a regular file"
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        return b"", f"larger than {max_bytes >> 20} MiB"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return b"", "not UTF-8 text"
    if rel in CONFIG_NAMES or rel == _NATIVE_CONFIG:
        return _clean_config(rel, text, skipped), None
    if rel in META:  # requirements.txt
        return data, None
    return data, refusal(rel, text)


def _clean_config(rel: str, text: str, skipped: list[str]) -> bytes:
    """config.yaml without its secret keys (re-serialized only when some were dropped);
    evoforge.toml as it is, refused when it holds any."""
    from evoforge.evaluators.openevolve.files import SECRET_TEXT
    from evoforge.evaluators.openevolve.redact import drop_secrets

    if rel == _NATIVE_CONFIG:
        import tomllib
        try:
            dropped = drop_secrets(tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            raise UploadError(f"{rel}: not valid TOML: {exc}") from None
        if dropped or SECRET_TEXT.search(text):
            found = ", ".join(dropped) or "a token"
            raise UploadError(f"{rel} holds secret-looking keys or values ({found}): remove them; "
                              "nothing was sent")
        return text.encode()
    import yaml
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UploadError(f"{rel}: not valid YAML: {_one_line(str(exc))}") from None
    dropped = drop_secrets(config)
    if dropped:
        text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        skipped += [f"{rel}: {key} (a secret key, dropped)" for key in dropped]
    if SECRET_TEXT.search(text):
        raise UploadError(f"{rel} holds a secret-looking value (a key or token outside the keys "
                          "that are dropped): remove it; nothing was sent")
    return text.encode()
