"""`evoforge openevolve`: an OpenEvolve problem (initial program + evaluator [+ config]) run
unmodified on the embedded engine."""
from __future__ import annotations

from pathlib import Path

import click

from evoforge.cli.common import DB_HELP, InputError, emit_json, open_sessions, start_up
from evoforge.cli.run import create_campaign, print_summary, run_embedded
from evoforge.cli.term import safe


@click.command()
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
    with start_up() as warm:
        warm(sandbox)
        _openevolve(initial_program, evaluator, config_path, iterations, parallel, seed, db,
                    llm_base_url, models, sandbox, name, as_json, include, exclude)


def _openevolve(initial_program, evaluator, config_path, iterations, parallel, seed, db,
                llm_base_url, models, sandbox, name, as_json, include=(), exclude=()) -> None:
    from evoforge.evaluators.openevolve import load_problem
    from evoforge.evaluators.textfile import TextFileError
    from evoforge.db.campaign_config import ModelChoice

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
        mutator["models"] = [ModelChoice.parse(m).model_dump() for m in models]
    iterations = iterations if iterations is not None else (problem.max_iterations or 100)
    parallel = parallel or problem.parallel or 1
    seed = seed if seed is not None else (problem.seed or 0)
    _report_problem(problem, config_path)
    raw = {"task": "openevolve", "params": problem.task_params, "program": problem.seed_program,
           "name": name or f"openevolve {Path(evaluator).resolve().parent.name} #{seed}",
           "seed": seed, "parallel": parallel, "sandbox": sandbox, "mutator": mutator,
           "archive": problem.archive,
           "budget": {**problem.budget, "max_evaluations": iterations + 1}}
    sessions = open_sessions(db)
    campaign_id = create_campaign(sessions, raw)
    # The URL from your command line or your config.yaml: you are the operator here.
    result = run_embedded(sessions, campaign_id, parallel, quiet=as_json,
                          operator_url=mutator.get("base_url"))
    result["params"] = {k: v for k, v in problem.task_params.items() if k not in ("files", "context")}
    result.update(files_hash=problem.files_hash, mutator=mutator["kind"],
                  unsupported_config=problem.unsupported, config_notes=problem.notes,
                  shipped_files=problem.shipped, skipped_files=problem.skipped,
                  ignored_config_keys=problem.ignored_secrets)
    if as_json:
        emit_json(result)
    else:
        print_summary(result)


def _report_problem(problem, config_path: str | None) -> None:
    """What was read, ignored, shipped and left out, on stderr (names only, escaped)."""
    from evoforge.evaluators.openevolve.config import KEY_SOURCE

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
