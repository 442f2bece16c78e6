"""`evoforge run`: create (or resume) a campaign and run it on the embedded engine, with a
progress bar and a summary; also what `evoforge openevolve` runs with."""
from __future__ import annotations

from typing import Any

import click

from evoforge.cli.common import (DB_HELP, emit_json, number, open_sessions, parse_params, read_input,
                                 resume_gc, start_up)
from evoforge.cli.term import safe


def llm_options(f):
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
    from evoforge.db.campaign_config import ModelChoice

    if llm_base_url and endpoint:
        raise click.UsageError("give --llm-base-url or --endpoint, not both")
    if not llm_base_url and not endpoint:
        if models:
            raise click.UsageError("--model needs --llm-base-url or --endpoint")
        return {"kind": "local"}
    target = {"endpoint": endpoint} if endpoint else {"base_url": llm_base_url}
    spec: dict[str, Any] = {"kind": "llm", **target,
                            "models": [ModelChoice.parse(m).model_dump() for m in models or ("default",)],
                            "ideas": ideas}
    if endpoint:
        _check_endpoint(endpoint, [m["name"] for m in spec["models"]])
    if temperature is not None:
        spec["temperature"] = temperature
    if max_tokens is not None:
        spec["max_tokens"] = max_tokens
    return spec


@click.command()
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
@llm_options
def run(task_name, param_pairs, iterations, parallel, seed, islands, db, program, name, resume_id,
        sandbox, as_json, llm_base_url, endpoint, models, temperature, max_tokens, max_total_tokens,
        max_cost, max_seconds, ideas) -> None:
    """Run (or resume) a discovery campaign on the embedded engine."""
    with start_up() as warm:
        _run(warm, task_name, param_pairs, iterations, parallel, seed, islands, db, program, name,
             resume_id, sandbox, as_json, llm_base_url, models, temperature, max_tokens,
             max_total_tokens, max_cost, max_seconds, ideas, endpoint)


def _run(warm, task_name, param_pairs, iterations, parallel, seed, islands, db, program, name,
         resume_id, sandbox, as_json, llm_base_url, models, temperature, max_tokens,
         max_total_tokens, max_cost, max_seconds, ideas, endpoint=None) -> None:
    if resume_id is None:
        warm(sandbox)
    sessions = open_sessions(db)
    if resume_id is not None:
        _resume(warm, sessions, resume_id, task_name, iterations, llm_base_url)
        campaign_id = resume_id
    else:
        raw = {"task": task_name, "params": parse_params(param_pairs), "name": name, "seed": seed,
               "parallel": parallel, "sandbox": sandbox,
               "mutator": _mutator_spec(llm_base_url, models, temperature, max_tokens, ideas, endpoint),
               "budget": {"max_evaluations": iterations + 1, "max_tokens": max_total_tokens,
                          "max_cost_usd": max_cost, "max_seconds": max_seconds}}
        if islands:
            raw["archive"] = {"islands": islands}
        if program:
            raw["program"] = read_input(program)
        campaign_id = create_campaign(sessions, raw)
    # You are the operator here: your --llm-base-url gets the key from your environment. Given
    # in-process, never stored: a stored base_url (a resumed campaign's) gets no key unless
    # you repeat it with --llm-base-url.
    result = run_embedded(sessions, campaign_id, parallel, quiet=as_json,
                          operator_url=llm_base_url)
    if as_json:
        emit_json(result)
    else:
        print_summary(result)


def _resume(warm, sessions, campaign_id: int, task_name: str, iterations: int,
            llm_base_url: str | None) -> None:
    """`--resume ID --iterations N`: the service's resume with N more evaluations
    (worker/campaign_service.py), on the same archive."""
    from evoforge.db.campaign_config import CampaignConfig
    from evoforge.worker import campaign_service as service

    operator = service.Scope.operator()
    try:
        with sessions() as s:
            c = service.get_campaign(s, operator, campaign_id)
            if c.task != task_name:
                raise click.ClickException(f"campaign {campaign_id} is a {c.task} campaign, not {task_name}")
            config = CampaignConfig.load(c)
        service.resume(sessions, operator, campaign_id, more_evaluations=iterations)
    except (service.CampaignNotFound, service.TransitionRefused, service.SpecError) as exc:
        raise click.ClickException(str(exc.args[0])) from None
    warm(config.sandbox)  # the stored one runs
    stored_url = config.mutator.base_url
    if stored_url and stored_url != llm_base_url:
        click.echo(f"note: campaign {campaign_id}'s stored LLM URL gets no API key and only "
                   f"public addresses; repeat --llm-base-url {safe(stored_url, one_line=True)} "
                   "to trust it", err=True)


def _check_endpoint(name: str, models: list[str]) -> None:
    """--endpoint NAME: declared in $EVOFORGE_LLM_ENDPOINTS, with the models it allows."""
    from evoforge.worker.endpoints import EndpointError, check_models, load_endpoints

    try:
        check_models(name, load_endpoints().endpoint(name), models)
    except EndpointError as exc:
        raise click.ClickException(str(exc)) from None


def create_campaign(sessions, raw: dict[str, Any]) -> int:
    """Validate a campaign spec and store it; bad input is a one-line error, not a traceback."""
    from evoforge.db.campaign_config import CampaignSpec
    from evoforge.worker.campaign_service import SpecError, create_campaign

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


def run_embedded(sessions, campaign_id: int, parallel: int, *, quiet: bool,
                  operator_url: str | None = None) -> dict[str, Any]:
    from evoforge.db.models import Campaign
    from evoforge.worker.embedded import EmbeddedExecutor
    from evoforge.worker.runtime import close_sandboxes

    with sessions() as s:
        c = s.get(Campaign, campaign_id)
        total, done = c.max_evaluations, c.evaluations
    state = {"best": None, "hits": 0, "fail": 0}
    progress = _progress(quiet)
    bar = progress.add_task("run", total=total, completed=done, cid=campaign_id, best="-", hits=0, fail=0)

    def on_commit(_it, committed) -> None:
        resume_gc()  # started: the first iteration is committed
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
    from evoforge.worker.campaign_service import mutation_stats

    result.update(mutation_stats(sessions, campaign_id))
    return result


def print_summary(r: dict[str, Any]) -> None:
    """The summary a person reads: numbers to 6 significant digits (`--json` has them all)."""
    click.echo(safe(f"campaign {r['campaign_id']} ({r['task']}) {r['status']}"))
    click.echo(f"  evaluations {r['evaluations']}  sandbox runs {r['sandbox_runs']}  cache hits "
               f"{r['cache_hits']}  failures {r['failures']}  tokens {r['tokens']}  "
               f"cost ${number(r['cost_usd'])}")
    click.echo(f"  seed score {number(r['seed_score'])}  best score {number(r['best_score'])}  "
               f"(program {r['best_program_id']})")
    if "edits_applied" in r:
        click.echo(f"  edits applied {r['edits_applied']}  rejected {r['edits_rejected']}")
    if r.get("error"):
        click.echo(f"  error: {safe(r['error'])}")
    click.echo(f"  best program: evoforge best {r['campaign_id']} --out best.py")
