"""Reading results: `evoforge tasks`, `eval` (one program), `campaigns` (the list) and `best`.
Campaigns are read through the campaign service (worker/campaign_service.py), as the API does."""
from __future__ import annotations

import click

from evoforge.cli.common import (DB_HELP, InputError, emit_json, number, open_sessions,
                                 parse_params, read_input)
from evoforge.cli.term import safe


@click.command()
def tasks() -> None:
    """List the registered tasks (built-in and installed plugins) and their parameters."""
    from evoforge.evaluators.base import all_tasks, task_source

    for name, task in all_tasks().items():
        fields = ", ".join(f"{k}={f.get_default(call_default_factory=True)!r}"
                           for k, f in task.Params.model_fields.items())
        source = task_source(name)
        origin = "" if source == "built-in" else f"  [plugin {source}]"
        click.echo(safe(f"{name:16s} v{task.version}  entrypoint {task.entrypoint}()  "
                        f"params: {fields}{origin}", one_line=True))


@click.command(name="eval")
@click.argument("task_name", metavar="TASK")
@click.argument("file")
@click.option("--param", "param_pairs", multiple=True, help="Task parameter k=v, repeatable.")
@click.option("--db", default=None, help=DB_HELP)
@click.option("--sandbox", type=click.Choice(["fork", "subprocess", "docker"]), default="fork", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(task_name, file, param_pairs, db, sandbox, as_json) -> None:
    """Evaluate one program file safely, with the evaluation cache. FILE: a regular UTF-8 file
    of at most 1 MB."""
    from evoforge.worker.campaign_service import SpecError, resolve_task
    from evoforge.worker.evaluate import evaluate_program
    from evoforge.worker.runtime import close_sandboxes, shared_sandbox

    try:
        task, params = resolve_task(task_name, parse_params(param_pairs))
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    code = read_input(file)
    sessions = open_sessions(db)
    try:
        out = evaluate_program(sessions, task, params, code, sandbox=shared_sandbox(sandbox))
    finally:
        close_sandboxes()
    if as_json:
        emit_json(out)
        return
    # Metrics and the reason are the candidate's (or its evaluator's) words: escaped.
    click.echo(f"status {out['status']}  score {number(out['score'])}  cache {out['cache']}")
    for k, v in out["metrics"].items():
        click.echo(f"  {safe(k, one_line=True)}: {safe(number(v), one_line=True)}")
    if out.get("reason"):
        click.echo(f"  reason: {safe(out['reason'])}")
    click.echo(f"  code hash {out['code_hash'][:16]}  functional hash {(out['functional_hash'] or '-')[:16]}")


@click.command()
@click.option("--db", default=None, help=DB_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", type=int, default=50, show_default=True)
def campaigns(db, as_json, limit) -> None:
    """List campaigns, newest first."""
    from evoforge.worker import campaign_service as service

    sessions = open_sessions(db)
    with sessions() as s:
        found, _total = service.list_campaigns(s, service.Scope.operator(), limit=limit)
        rows = [service.describe(c) for c in found]
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        click.echo(f"{r['campaign_id']:5d}  {r['task']:15s} {r['status']:10s} evals {r['evaluations']:6d}  "
                   f"best {number(r['best_score'])}  seed {number(r['seed_score'])}  "
                   f"{safe(r['name'], one_line=True)}")


@click.command()
@click.argument("campaign_id", type=int)
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write the exact program to this new file (never through a symlink).")
@click.option("--force", is_flag=True, help="With --out: replace an existing regular file.")
@click.option("--db", default=None, help=DB_HELP)
def best(campaign_id, out, force, db) -> None:
    """Print (or save) the best program of a campaign. Printed, its control characters are
    escaped (\\x1b...); --out writes the exact text."""
    from evoforge.worker import campaign_service as service

    sessions = open_sessions(db)
    with sessions() as s:
        try:
            c, program = service.best_program(s, service.Scope.operator(), campaign_id)
        except LookupError as exc:  # CampaignNotFound too
            raise click.ClickException(str(exc.args[0])) from None
        from evoforge.db.blobs import program_texts

        code, score = program_texts(s, program).code, c.best_score
    if out:
        from evoforge.cli.outfile import OutFileError, write_new_file

        try:
            write_new_file(out, code, force=force)
        except OutFileError as exc:
            raise InputError(str(exc)) from None
        click.echo(f"wrote program {program.id} (score {number(score)}) to {safe(out)}", err=True)
    else:
        click.echo(safe(code))
