"""The `evoforge` command group: logging, escaped errors, and the commands of this package."""
from __future__ import annotations

import logging

import click

from evoforge.cli import admin, newtask, openevolve, remote, results, run, services, transfer
from evoforge.cli.common import SafeGroup
from evoforge.cli.term import SafeFormatter


@click.group(cls=SafeGroup)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """EvoForge: evolve programs with LLMs, sandboxed evaluators and a MAP-Elites database."""
    log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format=log_format)
    for handler in logging.getLogger().handlers:  # log lines can quote a candidate's error
        handler.setFormatter(SafeFormatter(log_format))


for command in (results.tasks, run.run, results.eval_cmd, results.campaigns, results.best,
                admin.db, admin.serve, admin.apikey, openevolve.openevolve, services.worker,
                services.beat, newtask.new_task, remote.remote, transfer.export_cmd,
                transfer.import_cmd, transfer.prune_cmd):
    main.add_command(command)


if __name__ == "__main__":
    main()
