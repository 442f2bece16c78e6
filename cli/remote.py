"""`evoforge remote`: a server's problems and campaigns from the command line (docs/remote.md).

`remote submit DIR` uploads a problem directory (deduplicated by content on the server), creates
a campaign on it and, with `--follow`, shows its live progress from the event stream; Ctrl-C
stops following, never the campaign. Everything the server sends is untrusted text (a campaign
name, an evaluator's error, a program) and is escaped before it reaches the terminal
(cli/term.py); `--json` output is escaped by json.dumps. A refusal or an unreachable server is
one line and exit code 1; a bad local input (a directory, an --out file) exit code 2.
"""
from __future__ import annotations

import functools
import time
from typing import Any, Callable

import click

from evoforge.cli.common import InputError, SafeGroup, emit_json, number
from evoforge.cli.term import safe

FOLLOW_FIELDS = ("campaign_id", "problem_id", "status", "seed_score", "best_score", "evaluations")


def _client(ctx: click.Context):
    from evoforge.client import Client

    obj = ctx.find_object(dict)
    if "client" not in obj:
        try:
            obj["client"] = Client(obj["server"], obj["key"], timeout=obj["timeout"])
        except ValueError as exc:
            raise InputError(str(exc)) from None
        ctx.call_on_close(obj["client"].close)
    return obj["client"]


def _errors(f: Callable[..., Any]) -> Callable[..., Any]:
    """ServerError -> one line, exit 1; a local input the client refuses -> one line, exit 2."""
    @functools.wraps(f)
    def wrapper(*args: Any, **kw: Any) -> Any:
        from evoforge.client import ServerError, UploadError

        try:
            return f(*args, **kw)
        except ServerError as exc:
            raise click.ClickException(str(exc)) from None
        except UploadError as exc:
            raise InputError(str(exc)) from None
        except KeyError as exc:  # an answer without a field every EvoForge answer has
            raise click.ClickException(f"unexpected answer from the server: no {exc.args[0]!r}"
                                       ) from None
        except LookupError as exc:  # Client.best: no scored program yet
            raise click.ClickException(str(exc.args[0])) from None
    return wrapper


@click.group(cls=SafeGroup)
@click.option("--server", envvar="EVOFORGE_SERVER", default=None, metavar="URL",
              help="The server (default: $EVOFORGE_SERVER, else http://127.0.0.1:8000).")
@click.option("--key", envvar="EVOFORGE_API_KEY", default=None, metavar="KEY",
              help="API key (default: $EVOFORGE_API_KEY); never printed.")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=30, show_default=True,
              help="Seconds to wait for an answer.")
@click.pass_context
def remote(ctx: click.Context, server: str | None, key: str | None, timeout: float) -> None:
    """Problems and campaigns on an EvoForge server (`evoforge serve`)."""
    ctx.obj = {"server": server, "key": key, "timeout": timeout}


# -- submit and follow -----------------------------------------------------------------------


def _mutator(kind: str | None, endpoint: str | None, models: tuple[str, ...]) -> dict[str, Any] | None:
    """The request's mutator; None: the problem's config decides."""
    from evoforge.evolution.ensemble import parse_model_spec

    if kind == "local":
        if endpoint or models:
            raise click.UsageError("--endpoint and --model need --mutator llm")
        return {"kind": "local"}
    if kind is None and not endpoint and not models:
        return None
    spec: dict[str, Any] = {"kind": "llm"}
    if endpoint:
        spec["endpoint"] = endpoint
    try:
        parsed = [parse_model_spec(m) for m in models]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None
    if parsed:
        spec["models"] = [{"name": m.name, "weight": m.weight} for m in parsed]
    return spec


def _report_problem(problem: dict[str, Any]) -> None:
    """What was sent, skipped and reported about the problem, on stderr (escaped)."""
    pid = problem.get("id", "?")
    files = problem.get("files") or []
    state = "new" if problem.get("created") else "already stored"
    lines = [f"problem {pid} ({state}): {len(files)} file{'s' * (len(files) != 1)}"]
    if problem.get("client_skipped"):
        lines.append(f"not sent: {', '.join(problem['client_skipped'])}")
    report = problem.get("report") or {}
    if report.get("skipped"):
        lines.append(f"skipped by the server: {', '.join(map(str, report['skipped']))}")
    if report.get("ignored_secrets"):
        lines.append(f"config keys ignored: {', '.join(map(str, report['ignored_secrets']))}")
    lines += [f"config: unsupported: {x}" for x in report.get("unsupported") or ()]
    lines += [f"config: note: {x}" for x in report.get("notes") or ()]
    for line in lines:
        click.echo(safe(line, one_line=True), err=True)


@remote.command()
@click.argument("problem_dir", type=click.Path(exists=True), metavar="PROBLEM_DIR")
@click.option("--iterations", type=click.IntRange(0, 10_000_000), default=None,
              help="Mutations to evaluate, after the seed (default: the problem's config).")
@click.option("--mutator", "mutator_kind", type=click.Choice(["local", "llm"]), default=None,
              help="local: the AST mutator, no model calls; llm: an LLM endpoint (default: the "
                   "problem's config).")
@click.option("--endpoint", default=None, metavar="NAME",
              help="An LLM endpoint the server's operator declared (GET /api/v1/endpoints).")
@click.option("--model", "models", multiple=True, metavar="NAME[:W]",
              help="A model of the endpoint, with an optional weight; repeatable.")
@click.option("--parallel", type=click.IntRange(1, 256), default=None, help="Evaluations in flight.")
@click.option("--sandbox", type=click.Choice(["fork", "subprocess", "docker"]), default=None,
              help="Where the evaluator runs and the requirements are checked (server default: fork).")
@click.option("--name", default=None, help="Campaign name.")
@click.option("--follow", is_flag=True, help="Show live progress until the campaign ends.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON line (with --follow: the result, once the campaign ends).")
@click.pass_context
@_errors
def submit(ctx, problem_dir, iterations, mutator_kind, endpoint, models, parallel, sandbox, name,
           follow, as_json) -> None:
    """Upload PROBLEM_DIR (a problem directory or a .zip/.tar/.tar.gz of one) and start a
    campaign on it. The same content uploaded again is the same problem."""
    mutator = _mutator(mutator_kind, endpoint, models)
    client = _client(ctx)
    problem = client.upload_problem(problem_dir, sandbox=sandbox)
    if not as_json:
        _report_problem(problem)
    spec: dict[str, Any] = {"problem": problem["id"]}
    if name is not None:
        spec["name"] = name
    if iterations is not None:
        spec["budget"] = {"max_evaluations": iterations + 1}
    if mutator is not None:
        spec["mutator"] = mutator
    if parallel is not None:
        spec["parallel"] = parallel
    if sandbox is not None:
        spec["sandbox"] = sandbox
    campaign = client.create_campaign(**spec)
    cid = campaign["id"]
    if follow:
        final = _follow(client, cid, quiet=as_json)
        _finish(final, problem["id"], as_json)
        return
    if as_json:
        emit_json({"campaign_id": cid, "problem_id": problem["id"], "status": campaign["status"]})
        return
    click.echo(f"campaign {cid} {safe(campaign['status'], one_line=True)} on problem {problem['id']}")
    click.echo(f"  follow: evoforge remote status {cid}   best: evoforge remote best {cid} --out best.py")


def _progress(quiet: bool, cid: int, state: dict[str, Any]):
    """A rich progress bar on stderr, as `evoforge run` shows (off without a terminal)."""
    if quiet:
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    progress = Progress(TextColumn("[bold]campaign {task.fields[cid]}"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("best {task.fields[best]}"),
                        TextColumn("fail {task.fields[fail]}"), TextColumn("{task.fields[status]}"),
                        TimeElapsedColumn(), console=console, disable=not console.is_terminal)
    bar = progress.add_task("follow", total=_count(state.get("max_evaluations")) or None, cid=cid,
                            **_fields(state))
    return progress, bar


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _fields(state: dict[str, Any]) -> dict[str, Any]:
    # Text columns are rich markup: only numbers and escaped, bracket-free words go in.
    best = state.get("best_score")
    status = safe(state.get("status", "?"), one_line=True).replace("[", "(")
    numeric = isinstance(best, (int, float)) and not isinstance(best, bool)
    return {"best": number(float(best)) if numeric else "-",
            "fail": _count(state.get("failures")), "status": status}


def _follow(client, cid: int, *, quiet: bool) -> dict[str, Any]:
    """Follow the campaign's event stream until it ends; its final state. Ctrl-C stops
    following (exit 130) and says how to cancel. Without a stream slot (429), polls."""
    from evoforge.client import FINAL_STATUSES, ServerError

    state = client.campaign(cid)
    progress, bar = _progress(quiet, cid, state)

    def show(new: dict[str, Any]) -> None:
        if progress is not None:
            progress.update(bar, completed=_count(new.get("evaluations")),
                            total=_count(new.get("max_evaluations")) or None, **_fields(new))

    try:
        if progress is not None:
            progress.start()
        try:
            for event in client.events(cid):
                if event["event"] == "progress" and isinstance(event["data"], dict):
                    state = event["data"]
                    show(state)
        except ServerError as exc:
            if exc.status != 429:
                raise
            while state.get("status") not in FINAL_STATUSES:
                time.sleep(2)
                state = client.campaign(cid)
                show(state)
        state = client.campaign(cid)
        show(state)
    except KeyboardInterrupt:
        if progress is not None:
            progress.stop()
        click.echo(f"\nstopped following; campaign {cid} goes on (evoforge remote status {cid}; "
                   f"to stop it: evoforge remote cancel {cid})", err=True)
        raise click.exceptions.Exit(130) from None
    finally:
        if progress is not None:
            progress.stop()
    return state


def _finish(state: dict[str, Any], problem_id: str, as_json: bool) -> None:
    """The result of a followed campaign; exit code 1 when it failed."""
    cid = state["id"]
    if as_json:
        out = {"campaign_id": cid, "problem_id": problem_id,
               **{k: state.get(k) for k in FOLLOW_FIELDS[2:]}}
        if state.get("status") == "failed":
            out["error"] = state.get("error")
        emit_json(out)
    else:
        click.echo(safe(f"campaign {cid} {state.get('status')}: evaluations {state.get('evaluations')}"
                        f"  failures {state.get('failures')}  seed score {number(state.get('seed_score'))}"
                        f"  best score {number(state.get('best_score'))}", one_line=True))
        if state.get("error"):
            click.echo(f"  error: {safe(state['error'])}")
        if state.get("best_program_id") is not None:
            click.echo(f"  best program: evoforge remote best {cid} --out best.py")
    if state.get("status") == "failed":
        raise click.exceptions.Exit(1)


# -- reading and cancelling --------------------------------------------------------------------


@remote.command()
@click.option("--status", type=click.Choice(["queued", "running", "paused", "completed", "cancelled",
                                             "failed"]), default=None)
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_errors
def campaigns(ctx, status, limit, as_json) -> None:
    """List your project's campaigns, newest first."""
    rows = _client(ctx).campaigns(status, limit=limit)
    if as_json:
        emit_json(rows)
        return
    for c in rows:
        what = (c.get("problem") or "")[:12] or c.get("task", "?")
        click.echo(safe(f"{c['id']:5d}  {c['status']:10s} evals {c['evaluations']:6d}/"
                        f"{c.get('max_evaluations') or '-'}  best {number(c.get('best_score'))}  "
                        f"seed {number(c.get('seed_score'))}  {what:15s} {c.get('name', '')}",
                        one_line=True))


@remote.command()
@click.argument("campaign_id", type=int)
@click.option("--follow", is_flag=True, help="Show live progress until the campaign ends.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_errors
def status(ctx, campaign_id, follow, as_json) -> None:
    """Show one campaign: status, counts, scores, its error when it failed. With --follow, its
    live progress first (Ctrl-C stops following, not the campaign)."""
    client = _client(ctx)
    c = _follow(client, campaign_id, quiet=as_json) if follow else client.campaign(campaign_id)
    if as_json:
        emit_json(c)
        return
    lines = [f"campaign {c['id']} {c.get('name') or ''}",
             f"  status {c['status']}  evaluations {c['evaluations']}/{c.get('max_evaluations') or '-'}"
             f"  failures {c.get('failures')}  cache hits {c.get('cache_hits')}",
             f"  seed score {number(c.get('seed_score'))}  best score {number(c.get('best_score'))}"
             f"  (program {c.get('best_program_id') or '-'})",
             f"  {'problem ' + c['problem'] if c.get('problem') else 'task ' + str(c.get('task'))}"
             f"  mutator {(c.get('mutator') or {}).get('kind', '-')}  tokens {c.get('tokens')}"
             f"  cost ${number(c.get('cost_usd'))}"]
    for line in lines:
        click.echo(safe(line, one_line=True))
    if c.get("error"):
        click.echo(f"  error: {safe(c['error'])}")


@remote.command()
@click.argument("campaign_id", type=int)
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write the exact program to this new file (never through a symlink).")
@click.option("--force", is_flag=True, help="With --out: replace an existing regular file.")
@click.pass_context
@_errors
def best(ctx, campaign_id, out, force) -> None:
    """Print (or save) a campaign's best program. Printed, its control characters are escaped
    (\\x1b...); --out writes the exact text."""
    program = _client(ctx).best(campaign_id)
    code = program.get("code")
    if code is None:
        raise click.ClickException(f"program {program.get('id')} has no code to show")
    if not out:
        click.echo(safe(code))
        return
    from evoforge.cli.outfile import OutFileError, write_new_file

    try:
        write_new_file(out, code, force=force)
    except OutFileError as exc:
        raise InputError(str(exc)) from None
    click.echo(f"wrote program {program.get('id')} (score {number(program.get('score'))}) to "
               f"{safe(out)}", err=True)


@remote.command()
@click.argument("campaign_id", type=int)
@click.pass_context
@_errors
def cancel(ctx, campaign_id) -> None:
    """Cancel a queued, running or paused campaign (what it found is kept)."""
    c = _client(ctx).cancel(campaign_id)
    click.echo(safe(f"campaign {c['id']} {c['status']}", one_line=True))


@remote.command()
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_errors
def problems(ctx, limit, as_json) -> None:
    """List your project's stored problems, newest first."""
    rows = _client(ctx).problems(limit=limit)
    if as_json:
        emit_json(rows)
        return
    for p in rows:
        click.echo(safe(f"{p['id']}  {p.get('layout', '?'):10s} files {p.get('file_count')!s:<4} "
                        f"{p.get('size_bytes')!s:>8} B  {p.get('name', '')}", one_line=True))


@remote.command()
@click.argument("problem_id")
@click.option("--file", "file_path", default=None, metavar="PATH",
              help="Print this file of the problem.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_errors
def problem(ctx, problem_id, file_path, as_json) -> None:
    """Show a stored problem (its files, config report), or one of its files."""
    client = _client(ctx)
    try:
        if file_path is not None:
            f = client.problem_file(problem_id, file_path)
            if as_json:
                emit_json(f)
            else:
                click.echo(safe(f.get("text", "")))
            return
        p = client.problem(problem_id)
    except ValueError as exc:  # a malformed id or path, refused before any request
        raise InputError(str(exc)) from None
    if as_json:
        emit_json(p)
        return
    lines = [f"problem {p['id']} {p.get('name') or ''}",
             f"  layout {p.get('layout')}  seed {p.get('seed')}  evaluator {p.get('evaluator')}"
             f"  campaigns {p.get('campaigns')}"]
    if p.get("requirements"):
        lines.append(f"  requires {', '.join(map(str, p['requirements']))}")
    lines += [f"  {f.get('path')}  {f.get('bytes')} bytes" for f in p.get("files") or ()]
    for line in lines:
        click.echo(safe(line, one_line=True))
