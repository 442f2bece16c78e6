"""The `evoforge` command line."""
from __future__ import annotations

import gc
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from api.term import SafeFormatter, safe

DB_HELP = "Database URL (default: $EVOFORGE_DATABASE_URL, else SQLite under ~/.local/share/evoforge)."


def _params(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected k=v, got {pair!r}", param_hint="--param")
        out[key.strip()] = value.strip()
    return out


def _sessions(db: str | None):
    from db.engine import session_factory, upgrade

    try:
        upgrade(db)
    except Exception as exc:
        raise click.ClickException(f"cannot open database {db or '(default)'}: {exc}") from None
    return session_factory(db)


_gc_paused = False


def _pause_gc() -> None:
    """Start-up (SQLAlchemy, pydantic models, the openai package's hundreds of types) creates
    ~200k objects that live as long as the process, and the cyclic GC would traverse them again
    and again while they are being created: ~15% of the start-up. So it is paused until the
    first iteration is committed (_resume_gc)."""
    global _gc_paused
    if gc.isenabled():
        gc.disable()
        _gc_paused = True


def _resume_gc() -> None:
    """The start-up's objects go to the permanent generation (gc.freeze: no later collection
    traverses them; the few hundred cyclic garbage objects among them stay), then the GC runs
    as usual."""
    global _gc_paused
    if _gc_paused:
        _gc_paused = False
        gc.freeze()
        gc.enable()


@contextmanager
def _start_up() -> Iterator[Callable[[str], None]]:
    """For run/openevolve: the GC paused (see _pause_gc), and `warm(kind)`, which starts the shared
    sandbox of that kind in the background now, so that its server starts while the command sets
    up the database, the campaign and the mutator (worker.runtime.prestart_sandbox). Every
    sandbox is closed at the end, also when the command fails before its run."""
    _pause_gc()
    try:
        from worker.runtime import close_sandboxes, prestart_sandbox

        def warm(kind: str) -> None:
            prestart_sandbox(os.environ.get("EVOFORGE_SANDBOX") or kind)  # as Runtime.for_campaign

        try:
            yield warm
        finally:
            close_sandboxes()
    finally:
        _resume_gc()


def _emit_json(obj: Any) -> None:
    # ensure_ascii (the default) writes every control character, C1 included, as \uXXXX.
    click.echo(json.dumps(obj, default=str))


class InputError(click.ClickException):
    """A file or value the user gave that cannot be used: one line, exit code 2 (usage)."""
    exit_code = 2


class _SafeGroup(click.Group):
    """Error messages can quote a campaign name, a stored URL or a file's path: escaped
    (api/term.py) before click prints them."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            exc.message = safe(exc.message)
            raise


@click.group(cls=_SafeGroup)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """EvoForge: evolve programs with LLMs, sandboxed evaluators and a MAP-Elites database."""
    log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format=log_format)
    for handler in logging.getLogger().handlers:  # log lines can quote a candidate's error
        handler.setFormatter(SafeFormatter(log_format))


@main.command()
def tasks() -> None:
    """List the registered tasks and their parameters."""
    from evaluators.base import all_tasks

    for name, task in all_tasks().items():
        fields = ", ".join(f"{k}={f.default!r}" for k, f in task.Params.model_fields.items())
        click.echo(f"{name:16s} v{task.version}  entrypoint {task.entrypoint}()  params: {fields}")


def _llm_options(f):
    f = click.option("--llm-base-url", help="OpenAI-compatible endpoint; without it the local AST mutator is used.")(f)
    f = click.option("--endpoint", "endpoint", default=None,
                     help="An LLM endpoint from $EVOFORGE_LLM_ENDPOINTS, by name (instead of --llm-base-url).")(f)
    f = click.option("--model", "models", multiple=True, help="NAME[:WEIGHT], repeatable (a weighted ensemble).")(f)
    f = click.option("--temperature", type=float, default=None)(f)
    f = click.option("--max-tokens", type=int, default=None, help="Completion tokens per call.")(f)
    f = click.option("--max-total-tokens", type=int, default=None, help="Token budget for the campaign.")(f)
    f = click.option("--max-cost", type=float, default=None, help="Cost budget in USD.")(f)
    f = click.option("--max-seconds", type=float, default=None, help="Wall-time budget.")(f)
    f = click.option("--ideas/--no-ideas", default=False, help="Idea + review before code (AlphaResearch style).")(f)
    return f


def _mutator_spec(llm_base_url, models, temperature, max_tokens, ideas, endpoint=None) -> dict[str, Any]:
    from worker.spec import ModelSpec

    if llm_base_url and endpoint:
        raise click.UsageError("give --llm-base-url or --endpoint, not both")
    if not llm_base_url and not endpoint:
        if models:
            raise click.UsageError("--model needs --llm-base-url or --endpoint")
        return {"kind": "local"}
    target = {"endpoint": endpoint} if endpoint else {"base_url": llm_base_url}
    spec: dict[str, Any] = {"kind": "llm", **target,
                            "models": [ModelSpec.parse(m).model_dump() for m in models or ("default",)],
                            "ideas": ideas}
    if endpoint:
        _check_endpoint(endpoint, [m["name"] for m in spec["models"]])
    if temperature is not None:
        spec["temperature"] = temperature
    if max_tokens is not None:
        spec["max_tokens"] = max_tokens
    return spec


@main.command()
@click.argument("task_name", metavar="TASK")
@click.option("--param", "param_pairs", multiple=True, help="Task parameter k=v, repeatable.")
@click.option("--iterations", type=click.IntRange(0, 10_000_000), default=100, show_default=True,
              help="Mutations to evaluate (the seed program is evaluated first, in addition).")
@click.option("--parallel", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--islands", type=click.IntRange(1, 64), default=None)
@click.option("--db", default=None, help=DB_HELP)
@click.option("--program", type=click.Path(exists=True, dir_okay=False), help="Seed program file.")
@click.option("--name", default="", help="Campaign name.")
@click.option("--resume", "resume_id", type=int, default=None, help="Continue campaign ID's archive.")
@click.option("--sandbox", type=click.Choice(["fork", "subprocess", "docker"]), default="fork", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON line.")
@_llm_options
def run(task_name, param_pairs, iterations, parallel, seed, islands, db, program, name, resume_id,
        sandbox, as_json, llm_base_url, endpoint, models, temperature, max_tokens, max_total_tokens,
        max_cost, max_seconds, ideas) -> None:
    """Run (or resume) a discovery campaign on the embedded engine."""
    with _start_up() as warm:
        _run(warm, task_name, param_pairs, iterations, parallel, seed, islands, db, program, name,
             resume_id, sandbox, as_json, llm_base_url, models, temperature, max_tokens,
             max_total_tokens, max_cost, max_seconds, ideas, endpoint)


def _run(warm, task_name, param_pairs, iterations, parallel, seed, islands, db, program, name,
         resume_id, sandbox, as_json, llm_base_url, models, temperature, max_tokens,
         max_total_tokens, max_cost, max_seconds, ideas, endpoint=None) -> None:
    from sqlalchemy import update

    from db.models import Campaign

    if resume_id is None:
        warm(sandbox)
    sessions = _sessions(db)
    if resume_id is not None:
        with sessions.begin() as s:
            c = s.get(Campaign, resume_id)
            if c is None:
                raise click.ClickException(f"campaign {resume_id} not found")
            if c.task != task_name:
                raise click.ClickException(f"campaign {resume_id} is a {c.task} campaign, not {task_name}")
            s.execute(update(Campaign).where(Campaign.id == resume_id).values(
                max_evaluations=c.evaluations + iterations + (1 if c.evaluations == 0 else 0),
                status="running" if c.status != "running" else c.status, finished_at=None))
            warm((c.config or {}).get("sandbox") or "fork")  # the stored one runs
            stored_url = ((c.config or {}).get("mutator") or {}).get("base_url")
            if stored_url and stored_url != llm_base_url:
                click.echo(f"note: campaign {resume_id}'s stored LLM URL gets no API key and only "
                           f"public addresses; repeat --llm-base-url {safe(stored_url, one_line=True)} "
                           "to trust it",
                           err=True)
        campaign_id = resume_id
    else:
        raw = {"task": task_name, "params": _params(param_pairs), "name": name, "seed": seed,
               "parallel": parallel, "sandbox": sandbox,
               "mutator": _mutator_spec(llm_base_url, models, temperature, max_tokens, ideas, endpoint),
               "budget": {"max_evaluations": iterations + 1, "max_tokens": max_total_tokens,
                          "max_cost_usd": max_cost, "max_seconds": max_seconds}}
        if islands:
            raw["archive"] = {"islands": islands}
        if program:
            raw["program"] = _read_input(program)
        campaign_id = _create_campaign(sessions, raw)
    # You are the operator here: your --llm-base-url gets the key from your environment. Given
    # in-process, never stored: a stored base_url (a resumed campaign's) gets no key unless
    # you repeat it with --llm-base-url.
    result = _run_embedded(sessions, campaign_id, parallel, quiet=as_json,
                           operator_url=llm_base_url)
    if as_json:
        _emit_json(result)
    else:
        _print_summary(result)


def _check_endpoint(name: str, models: list[str]) -> None:
    """--endpoint NAME: declared in $EVOFORGE_LLM_ENDPOINTS, with the models it allows."""
    from worker.endpoints import EndpointError, check_models, load_endpoints

    try:
        check_models(name, load_endpoints().endpoint(name), models)
    except EndpointError as exc:
        raise click.ClickException(str(exc)) from None


def _create_campaign(sessions, raw: dict[str, Any]) -> int:
    """Validate a campaign spec and store it; bad input is a one-line error, not a traceback."""
    from worker.campaigns import SpecError, create_campaign
    from worker.spec import CampaignSpec

    try:
        return create_campaign(sessions, CampaignSpec.model_validate(raw)).id
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:
        raise click.ClickException(f"invalid campaign: {exc}") from None


class _NoProgress:
    """What a disabled rich Progress does (nothing), without importing rich (--json runs)."""

    def __enter__(self) -> "_NoProgress":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def add_task(self, *args, **kw) -> int:
        return 0

    def update(self, *args, **kw) -> None:
        pass


def _progress(quiet: bool) -> Any:
    if quiet:
        return _NoProgress()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    return Progress(TextColumn("[bold]campaign {task.fields[cid]}"), BarColumn(),
                    MofNCompleteColumn(), TextColumn("best {task.fields[best]}"),
                    TextColumn("cache {task.fields[hits]}"), TextColumn("fail {task.fields[fail]}"),
                    TimeElapsedColumn(), console=console, disable=not console.is_terminal,
                    transient=False)


def _run_embedded(sessions, campaign_id: int, parallel: int, *, quiet: bool,
                  operator_url: str | None = None) -> dict[str, Any]:
    from db.models import Campaign
    from worker.embedded import EmbeddedExecutor
    from worker.runtime import close_sandboxes

    with sessions() as s:
        c = s.get(Campaign, campaign_id)
        total, done = c.max_evaluations, c.evaluations
    state = {"best": None, "hits": 0, "fail": 0}
    progress = _progress(quiet)
    bar = progress.add_task("run", total=total, completed=done, cid=campaign_id, best="-", hits=0, fail=0)

    def on_commit(_it, committed) -> None:
        _resume_gc()  # started: the first iteration is committed
        r = committed.result
        if r.ok and r.score is not None and (state["best"] is None or r.score > state["best"]):
            state["best"] = r.score
        state["hits"] += committed.cache != "miss"
        state["fail"] += not r.ok
        progress.update(bar, advance=1, best=f"{state['best']:.6g}" if state["best"] is not None else "-",
                        hits=state["hits"], fail=state["fail"])

    executor = EmbeddedExecutor(sessions, campaign_id, parallel=parallel, on_commit=on_commit,
                                operator_url=operator_url)
    try:
        with progress:
            result = executor.run()
    finally:
        close_sandboxes()
    from worker.campaigns import mutation_stats

    result.update(mutation_stats(sessions, campaign_id))
    return result


def _read_input(path: str) -> str:
    """A program or problem file the user named: regular, at most 1 MB, UTF-8 (else exit 2)."""
    from evaluators.textfile import TextFileError, read_text_file

    try:
        return read_text_file(path)
    except TextFileError as exc:
        raise InputError(str(exc)) from None


def _print_summary(r: dict[str, Any]) -> None:
    click.echo(safe(f"campaign {r['campaign_id']} ({r['task']}) {r['status']}"))
    click.echo(f"  evaluations {r['evaluations']}  sandbox runs {r['sandbox_runs']}  cache hits "
               f"{r['cache_hits']}  failures {r['failures']}  tokens {r['tokens']}  cost ${r['cost_usd']}")
    click.echo(f"  seed score {r['seed_score']}  best score {r['best_score']}  (program {r['best_program_id']})")
    if "edits_applied" in r:
        click.echo(f"  edits applied {r['edits_applied']}  rejected {r['edits_rejected']}")
    if r.get("error"):
        click.echo(f"  error: {safe(r['error'])}")
    click.echo(f"  best program: evoforge best {r['campaign_id']} --out best.py")


@main.command(name="eval")
@click.argument("task_name", metavar="TASK")
@click.argument("file")
@click.option("--param", "param_pairs", multiple=True, help="Task parameter k=v, repeatable.")
@click.option("--db", default=None, help=DB_HELP)
@click.option("--sandbox", type=click.Choice(["fork", "subprocess", "docker"]), default="fork", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(task_name, file, param_pairs, db, sandbox, as_json) -> None:
    """Evaluate one program file safely, with the evaluation cache. FILE: a regular UTF-8 file
    of at most 1 MB."""
    from evaluators.base import get_task, parse_params
    from worker.evaluate import evaluate_program
    from worker.runtime import close_sandboxes, shared_sandbox

    try:
        task = get_task(task_name)
        params = parse_params(task, _params(param_pairs))
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from None
    except ValueError as exc:
        raise click.ClickException(f"invalid params: {exc}") from None
    code = _read_input(file)
    sessions = _sessions(db)
    try:
        out = evaluate_program(sessions, task, params, code, sandbox=shared_sandbox(sandbox))
    finally:
        close_sandboxes()
    if as_json:
        _emit_json(out)
        return
    # Metrics and the reason are the candidate's (or its evaluator's) words: escaped.
    click.echo(f"status {out['status']}  score {out['score']}  cache {out['cache']}")
    for k, v in out["metrics"].items():
        click.echo(f"  {safe(k, one_line=True)}: {safe(v, one_line=True)}")
    if out.get("reason"):
        click.echo(f"  reason: {safe(out['reason'])}")
    click.echo(f"  code hash {out['code_hash'][:16]}  functional hash {(out['functional_hash'] or '-')[:16]}")


@main.command()
@click.option("--db", default=None, help=DB_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", type=int, default=50, show_default=True)
def campaigns(db, as_json, limit) -> None:
    """List campaigns, newest first."""
    from sqlalchemy import select

    from db.campaigns import summary
    from db.models import Campaign

    sessions = _sessions(db)
    with sessions() as s:
        rows = [summary(c) for c in s.scalars(select(Campaign).where(Campaign.name != "adhoc")
                                              .order_by(Campaign.id.desc()).limit(limit))]
    if as_json:
        _emit_json(rows)
        return
    for r in rows:
        click.echo(f"{r['campaign_id']:5d}  {r['task']:15s} {r['status']:10s} evals {r['evaluations']:6d}  "
                   f"best {r['best_score']}  seed {r['seed_score']}  {safe(r['name'], one_line=True)}")


@main.command()
@click.argument("campaign_id", type=int)
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write the exact program to this new file (never through a symlink).")
@click.option("--force", is_flag=True, help="With --out: replace an existing regular file.")
@click.option("--db", default=None, help=DB_HELP)
def best(campaign_id, out, force, db) -> None:
    """Print (or save) the best program of a campaign. Printed, its control characters are
    escaped (\\x1b...); --out writes the exact text."""
    from db.models import Campaign, Program

    sessions = _sessions(db)
    with sessions() as s:
        c = s.get(Campaign, campaign_id)
        if c is None:
            raise click.ClickException(f"campaign {campaign_id} not found")
        if c.best_program_id is None:
            raise click.ClickException(f"campaign {campaign_id} has no valid program yet")
        code = s.get(Program, c.best_program_id).code
    if out:
        from api.outfile import OutFileError, write_new_file

        try:
            write_new_file(out, code, force=force)
        except OutFileError as exc:
            raise InputError(str(exc)) from None
        click.echo(f"wrote program {c.best_program_id} (score {c.best_score}) to {safe(out)}", err=True)
    else:
        click.echo(safe(code))


@main.group()
def db() -> None:
    """Database administration."""


@db.command()
@click.option("--db", "url", default=None, help=DB_HELP)
def upgrade(url) -> None:
    """Apply all migrations."""
    from db.engine import default_url, upgrade as do_upgrade

    do_upgrade(url)
    click.echo(f"database at head: {url or default_url()}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Bind address. Without API keys the server runs open only on loopback.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--db", default=None, help=DB_HELP)
@click.option("--broker-url", default=None,
              help="Celery broker (default: $EVOFORGE_BROKER_URL); without one campaigns run in-process.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="A Host name served besides loopback and the bind address (repeatable; '*' for "
                   "any). Default: $EVOFORGE_ALLOWED_HOSTS (comma-separated).")
@click.option("--allowed-origin", "allowed_origins", multiple=True, metavar="URL",
              help="A browser origin (https://name[:port]) allowed to send state-changing requests "
                   "besides the server's own (repeatable). Default: $EVOFORGE_ALLOWED_ORIGINS.")
@click.option("--max-body-mb", type=click.FloatRange(0, 1024), default=None,
              help="Request body limit in MiB. Default: $EVOFORGE_MAX_BODY_BYTES, else 4.")
def serve(host, port, db, broker_url, log_level, allowed_hosts, allowed_origins, max_body_mb) -> None:
    """Run the REST API (and dashboard) with uvicorn."""
    import uvicorn

    from api import guards
    from api.app import create_app

    _sessions(db)  # fail early, with a clear message, on a bad database URL
    try:
        app = create_app(db, broker_url=broker_url, bind_host=host,
                         allowed_hosts=list(allowed_hosts) or None,
                         allowed_origins=list(allowed_origins) or None,
                         max_body_bytes=None if max_body_mb is None else int(max_body_mb * guards.MiB))
    except ValueError as exc:   # a bad origin or $EVOFORGE_MAX_BODY_BYTES
        raise click.ClickException(str(exc)) from None
    if host.strip() in guards.WILDCARD_BINDS and not (allowed_hosts or guards.env_list(guards.ALLOWED_HOSTS_ENV)):
        click.echo(f"note: bound to {host or 'all addresses'} without --allowed-host: any Host header "
                   "is served (name the server's host names to refuse DNS-rebinding requests)", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, proxy_headers=False)


@main.group()
def apikey() -> None:
    """API keys (each belongs to a project)."""


@apikey.command(name="create")
@click.option("--project", required=True, help="Project name (created if needed).")
@click.option("--db", default=None, help=DB_HELP)
@click.option("--json", "as_json", is_flag=True)
def apikey_create(project, db, as_json) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from db.apikeys import create_key

    sessions = _sessions(db)
    try:
        key, _pid = create_key(sessions, project)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        _emit_json({"key": key, "project": project.strip()})
    else:
        click.echo(key)
        click.echo(f"API key for project {project.strip()!r}; it is shown only now.", err=True)


@apikey.command(name="list")
@click.option("--project", default=None)
@click.option("--db", default=None, help=DB_HELP)
@click.option("--json", "as_json", is_flag=True)
def apikey_list(project, db, as_json) -> None:
    """List keys (prefix only)."""
    from db.apikeys import list_keys

    rows = [{"id": k.id, "project": k.project, "prefix": k.prefix, "created_at": k.created_at,
             "revoked": k.revoked} for k in list_keys(_sessions(db), project)]
    if as_json:
        _emit_json(rows)
        return
    for r in rows:
        click.echo(f"{r['id']:5d}  {r['prefix']}...  {safe(r['project'], one_line=True):20s} "
                   f"{'revoked' if r['revoked'] else 'active'}")


@apikey.command(name="revoke")
@click.argument("key_id", type=int)
@click.option("--db", default=None, help=DB_HELP)
def apikey_revoke(key_id, db) -> None:
    """Revoke key KEY_ID (see `apikey list`)."""
    from db.apikeys import revoke_key

    if not revoke_key(_sessions(db), key_id):
        raise click.ClickException(f"no active key {key_id}")
    click.echo(f"revoked key {key_id}")


@main.command()
@click.argument("initial_program")
@click.argument("evaluator")
@click.option("--config", "config_path", default=None,
              help="OpenEvolve config.yaml (llm, prompt, database, evaluator keys are mapped; "
                   "api keys in it are ignored). Never shipped into the sandbox.")
@click.option("--include", "include", multiple=True, metavar="GLOB",
              help="Also ship the evaluator's sibling files matching GLOB (e.g. '*.dat'), repeatable; "
                   "never hidden, config or secret-looking files.")
@click.option("--exclude", "exclude", multiple=True, metavar="GLOB",
              help="Do not ship the sibling files matching GLOB, repeatable.")
@click.option("--iterations", type=click.IntRange(0, 10_000_000), default=None,
              help="Mutations to evaluate (default: the config's max_iterations, else 100).")
@click.option("--parallel", type=click.IntRange(1, 256), default=None,
              help="Evaluations in flight (default: evaluator.parallel_evaluations, else 1).")
@click.option("--seed", type=int, default=None, help="Campaign seed (default: the config's random_seed, else 0).")
@click.option("--db", default=None, help=DB_HELP)
@click.option("--llm-base-url", default=None, help="OpenAI-compatible endpoint; overrides llm.api_base.")
@click.option("--model", "models", multiple=True, help="NAME[:WEIGHT], repeatable; overrides the config's models.")
@click.option("--sandbox", type=click.Choice(["fork", "subprocess", "docker"]), default="fork", show_default=True)
@click.option("--name", default="", help="Campaign name.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON line.")
def openevolve(initial_program, evaluator, config_path, include, exclude, iterations, parallel, seed, db, llm_base_url,
               models, sandbox, name, as_json) -> None:
    """Run an OpenEvolve problem (initial program + evaluator [+ config]) unmodified."""
    with _start_up() as warm:
        warm(sandbox)
        _openevolve(initial_program, evaluator, config_path, iterations, parallel, seed, db,
                    llm_base_url, models, sandbox, name, as_json, include, exclude)


def _openevolve(initial_program, evaluator, config_path, iterations, parallel, seed, db,
                llm_base_url, models, sandbox, name, as_json, include=(), exclude=()) -> None:
    from evaluators.openevolve import load_problem
    from evaluators.textfile import TextFileError
    from worker.spec import ModelSpec

    try:
        problem = load_problem(initial_program, evaluator, config_path, llm_base_url=llm_base_url,
                               include=include, exclude=exclude)
    except TextFileError as exc:
        raise InputError(str(exc)) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise click.ClickException(f"cannot load the OpenEvolve problem: {exc}") from None
    mutator = dict(problem.mutator)
    if models:
        if mutator["kind"] != "llm":
            raise click.UsageError("--model needs --llm-base-url (or llm.api_base in the config)")
        mutator["models"] = [ModelSpec.parse(m).model_dump() for m in models]
    iterations = iterations if iterations is not None else (problem.max_iterations or 100)
    parallel = parallel or problem.parallel or 1
    seed = seed if seed is not None else (problem.seed or 0)
    _report_problem(problem, config_path)
    raw = {"task": "openevolve", "params": problem.task_params, "program": problem.seed_program,
           "name": name or f"openevolve {Path(evaluator).resolve().parent.name} #{seed}",
           "seed": seed, "parallel": parallel, "sandbox": sandbox, "mutator": mutator,
           "archive": problem.archive, "budget": {"max_evaluations": iterations + 1}}
    sessions = _sessions(db)
    campaign_id = _create_campaign(sessions, raw)
    # The URL from your command line or your config.yaml: you are the operator here.
    result = _run_embedded(sessions, campaign_id, parallel, quiet=as_json,
                           operator_url=mutator.get("base_url"))
    result["params"] = {k: v for k, v in problem.task_params.items() if k not in ("files", "context")}
    result.update(files_hash=problem.files_hash, mutator=mutator["kind"],
                  unsupported_config=problem.unsupported, config_notes=problem.notes,
                  shipped_files=problem.shipped, skipped_files=problem.skipped,
                  ignored_config_keys=problem.ignored_secrets)
    if as_json:
        _emit_json(result)
    else:
        _print_summary(result)


def _report_problem(problem, config_path: str | None) -> None:
    """What was read, ignored, shipped and left out, on stderr (names only, escaped)."""
    from evaluators.openevolve.config import KEY_SOURCE

    lines = []
    if config_path:
        ignored = (f"; ignored {', '.join(problem.ignored_secrets)} ({KEY_SOURCE})"
                   if problem.ignored_secrets else "")
        lines.append(f"read {Path(config_path).name}{ignored}")
    lines += [f"config: unsupported: {line}" for line in problem.unsupported]
    lines += [f"config: note: {line}" for line in problem.notes]
    lines.append(f"shipped {len(problem.shipped)} file{'s' * (len(problem.shipped) != 1)} into the "
                 f"sandbox: {', '.join(problem.shipped)}")
    if problem.skipped:
        lines.append(f"skipped: {', '.join(problem.skipped)}")
    for line in lines:
        click.echo(safe(f"openevolve {line}", one_line=True), err=True)


# -- Celery workers and the scheduler (worker/celery_app.py, worker/dispatch.py) ---------------
def _service_env(db: str | None, broker_url: str | None) -> None:
    """Options win over the environment; child processes (Celery pool) inherit it."""
    if db:
        os.environ["EVOFORGE_DATABASE_URL"] = db
    if broker_url:
        os.environ["EVOFORGE_BROKER_URL"] = broker_url
    if not os.environ.get("EVOFORGE_BROKER_URL"):
        raise click.UsageError("no broker: pass --broker-url or set EVOFORGE_BROKER_URL")


@main.command()
@click.option("--queues", default="llm,eval,gpu", show_default=True,
              help="Comma-separated queues to consume: llm (LLM calls), eval (sandboxed "
                   "evaluation), gpu (evaluation of GPU tasks).")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=None,
              help="Iterations in flight in this worker (default: CPU cores; 16 for llm only).")
@click.option("--pool", type=click.Choice(["threads", "prefork", "solo"]), default="threads",
              show_default=True, help="Candidates run in sandbox processes, so threads suffice.")
@click.option("--loglevel", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"], case_sensitive=False))
@click.option("--hostname", default=None, help="Celery node name, e.g. eval1@%h.")
@click.option("--db", default=None, help=DB_HELP)
@click.option("--broker-url", default=None, help="Redis URL (default: $EVOFORGE_BROKER_URL).")
@click.option("--visibility-timeout", type=click.FloatRange(1, None), default=None,
              help="Seconds before Redis redelivers a dead worker's task "
                   "(default: $EVOFORGE_VISIBILITY_TIMEOUT_S, else 3600; above the longest task).")
def worker(queues, concurrency, pool, loglevel, hostname, db, broker_url, visibility_timeout) -> None:
    """Run a Celery worker that executes campaign iterations."""
    from worker.celery_app import QUEUES

    _service_env(db, broker_url)
    if visibility_timeout:
        os.environ["EVOFORGE_VISIBILITY_TIMEOUT_S"] = str(visibility_timeout)
    names = [q.strip() for q in queues.split(",") if q.strip()]
    bad = [q for q in names if q not in QUEUES]
    if not names or bad:
        raise click.BadParameter(f"unknown queue(s) {bad or queues!r}; choose from {', '.join(QUEUES)}",
                                 param_hint="--queues")
    if concurrency is None:
        concurrency = 16 if names == ["llm"] else (os.cpu_count() or 1)
    from celery.signals import worker_shutdown

    from worker.celery_app import app
    import worker.tasks  # noqa: F401  (registers the tasks)
    from worker.runtime import close_sandboxes

    worker_shutdown.connect(lambda **_: close_sandboxes(), weak=False)
    argv = ["worker", f"--queues={','.join(names)}", f"--concurrency={concurrency}",
            f"--pool={pool}", f"--loglevel={loglevel.upper()}", "--without-gossip",
            "--without-mingle"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main(argv)


@main.command()
@click.option("--interval", type=click.FloatRange(0.1, 3600), default=5.0, show_default=True,
              help="Seconds between rounds (schedule triggers + sweep).")
@click.option("--stale-after", type=click.FloatRange(1, None), default=600.0, show_default=True,
              help="Re-send a reserved iteration still uncommitted after this many seconds "
                   "(a lost message); above the longest queue wait + iteration.")
@click.option("--db", default=None, help=DB_HELP)
@click.option("--broker-url", default=None, help="Redis URL (default: $EVOFORGE_BROKER_URL).")
@click.option("--loglevel", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"], case_sensitive=False))
def beat(interval, stale_after, db, broker_url, loglevel) -> None:
    """Run the scheduler: cron slices of scheduled campaigns, and the sweeper that re-sends lost
    iterations, refills running campaigns and marks finished ones completed. Run one."""
    from db.engine import session_factory
    from worker.schedule import run_beat

    _service_env(db, broker_url)
    logging.getLogger().setLevel(loglevel.upper())
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_beat(session_factory(db), interval_s=interval, stale_after_s=stale_after)


if __name__ == "__main__":
    main()
