"""`evoforge export`, `evoforge import` and `evoforge prune`: move a campaign between databases
and drop what a team no longer needs (worker/transfer.py, worker/prune.py; docs/export.md).

The export file is written as cli/outfile.py writes files: never through a symlink, an existing
file only with --force (then to a temporary file renamed over it, so a reader never sees half an
export, and a failed export leaves the old file). `--out -` writes to standard output unless that
is a terminal (compressed bytes would garble it)."""
from __future__ import annotations

import os
import stat
import sys
from contextlib import contextmanager
from typing import IO, Iterator

import click

from evoforge.cli.common import DB_HELP, InputError, emit_json, open_sessions
from evoforge.cli.outfile import OutFileError, open_new_file
from evoforge.cli.term import safe


@contextmanager
def _out_file(path: str, force: bool) -> Iterator[IO[bytes]]:
    """A binary stream to `path` under cli/outfile.py's rules (see the module doc)."""
    if path == "-":
        if sys.stdout.isatty():
            raise InputError("refusing to write a compressed export to a terminal: redirect it "
                             "(> FILE) or give --out FILE")
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    try:
        with open_new_file(path, force=force) as f:
            yield f
    except OutFileError as exc:
        raise InputError(str(exc)) from None


def _progress(total: int, label: str):
    """A progress bar on stderr (shown only on a terminal), like `evoforge run`'s."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    progress = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("programs"), TimeElapsedColumn(), console=console,
                        disable=not console.is_terminal or total < 1000, transient=False)
    return progress, progress.add_task(label, total=total)


@click.command(name="export")
@click.argument("campaign_id", type=int)
@click.option("--out", "out", required=True,
              help="The file to write (never through a symlink); '-' for standard output.")
@click.option("--force", is_flag=True, help="Replace an existing regular file.")
@click.option("--db", default=None, help=DB_HELP)
def export_cmd(campaign_id, out, force, db) -> None:
    """Export a campaign to a portable file: zstd-compressed JSON Lines with its config, problem,
    programs (code, prompts, responses, lineage), evaluations and archive (docs/export.md)."""
    from evoforge.worker import transfer
    from evoforge.worker.campaign_service import CampaignNotFound, Scope, get_campaign

    sessions = open_sessions(db)
    with sessions() as s:
        try:
            get_campaign(s, Scope.operator(), campaign_id)
        except CampaignNotFound as exc:
            raise click.ClickException(str(exc.args[0])) from None
    progress, bar = _progress(transfer.count_programs(sessions, campaign_id), "export")
    with progress, _out_file(out, force) as f:
        summary = transfer.export_campaign(sessions, campaign_id, f,
                                           progress=lambda n: progress.update(bar, advance=n))
    click.echo(f"exported campaign {campaign_id}: {summary.programs} programs, {summary.codes} "
               f"distinct codes, {summary.elites} elite cells, {summary.bytes_written} bytes"
               + (f" to {safe(out)}" if out != "-" else ""), err=True)


@click.command(name="import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--db", default=None, help=DB_HELP)
@click.option("--project", default=None,
              help="Import into this project (by name); default: no project (open mode).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON line.")
def import_cmd(file, db, project, as_json) -> None:
    """Restore an exported campaign into a database, with new ids and its lineage intact. It
    arrives paused (or with its final status) and never starts by itself: resume it with
    `evoforge run TASK --resume ID`. All or nothing: a refused file leaves no campaign."""
    from evoforge.worker import transfer
    from evoforge.worker.campaign_service import SpecError

    sessions = open_sessions(db)
    try:
        project_id = transfer.project_id_of(sessions, project) if project else None
        if file == "-":
            summary = transfer.import_campaign(sessions, sys.stdin.buffer, project_id=project_id)
        else:
            with _in_file(file) as f:
                summary = transfer.import_campaign(sessions, f, project_id=project_id)
    except SpecError as exc:  # TransferError too: one line, with the line number
        raise InputError(f"{file}: {exc}") from None
    if as_json:
        emit_json(summary.__dict__)
        return
    click.echo(f"imported campaign {summary.campaign_id} ({summary.status}): {summary.programs} "
               f"programs, {summary.codes} codes, {summary.elites} elite cells")
    for note in summary.notes:
        click.echo(f"  note: {safe(note, one_line=True)}")


@contextmanager
def _in_file(path: str) -> Iterator[IO[bytes]]:
    """A regular file, opened without following a symlink at its last component."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    f = os.fdopen(fd, "rb")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"{path} is not a regular file")
        yield f
    finally:
        f.close()


@click.command(name="prune")
@click.argument("campaign_id", type=int)
@click.option("--keep", default="elites,lineage", show_default=True,
              help="What to keep in full: elites (always), lineage (the elites' ancestors).")
@click.option("--older-than", default=None,
              help="Only programs older than this (7d, 12h, 30m, 2w).")
@click.option("--vacuum/--no-vacuum", default=False, show_default=True,
              help="SQLite: VACUUM afterwards to shrink the file (rewrites it: may take a while "
                   "and needs about its size free on disk).")
@click.option("--force", is_flag=True,
              help="Prune even a running or queued campaign (consistent, but on SQLite its "
                   "commits wait while the code blobs are collected).")
@click.option("--db", default=None, help=DB_HELP)
@click.option("--json", "as_json", is_flag=True)
def prune_cmd(campaign_id, keep, older_than, vacuum, force, db, as_json) -> None:
    """Drop the code, prompts and responses of programs that are not kept, keeping their hashes,
    scores and evaluations, so the evaluation cache still answers for them."""
    from evoforge.db.campaign_rows import engine_of
    from evoforge.worker import prune
    from evoforge.worker.campaign_service import CampaignNotFound, SpecError

    try:
        keep_set, age = prune.parse_keep(keep), prune.parse_age(older_than)
    except SpecError as exc:
        raise InputError(str(exc)) from None
    sessions = open_sessions(db)
    try:
        result = prune.prune_campaign(sessions, campaign_id, keep=keep_set, older_than=age,
                                      force=force)
    except CampaignNotFound as exc:
        raise click.ClickException(str(exc.args[0])) from None
    except prune.CampaignBusy as exc:
        raise click.ClickException(str(exc)) from None
    out = result.as_dict()
    engine = engine_of(sessions)
    if vacuum and engine.dialect.name == "sqlite":
        if not as_json:
            click.echo("VACUUM: rewriting the database file (may take a while)...", err=True)
        out["bytes_before"], out["bytes_after"] = prune.vacuum_sqlite(engine)
        out["reclaim"] = "done (VACUUM)"
    if as_json:
        emit_json(out)
        return
    click.echo(f"campaign {campaign_id}: pruned {result.pruned} programs, kept {result.kept} in "
               f"full ({result.already_pruned} pruned before); {result.code_blobs_deleted} code "
               "blobs deleted")
    if "bytes_after" in out:
        click.echo(f"  database file {out['bytes_before']} -> {out['bytes_after']} bytes")
    else:
        click.echo(f"  space: {out['reclaim']}")
