"""Administration: `evoforge db upgrade`, `evoforge serve` (the REST API and dashboard) and
`evoforge apikey`."""
from __future__ import annotations

import click

from evoforge.cli.common import DB_HELP, emit_json, open_sessions
from evoforge.cli.term import safe


@click.group()
def db() -> None:
    """Database administration."""


@db.command()
@click.option("--db", "url", default=None, help=DB_HELP)
def upgrade(url) -> None:
    """Apply all migrations."""
    from evoforge.db.engine import default_url, upgrade as do_upgrade

    do_upgrade(url)
    click.echo(f"database at head: {url or default_url()}")


@click.command()
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
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="API processes on the one port (each with its own database pool and caches; "
                   "reads stay exact across them). More than one needs a broker.")
def serve(host, port, db, broker_url, log_level, allowed_hosts, allowed_origins, max_body_mb,
          workers) -> None:
    """Run the REST API (and dashboard) with uvicorn."""
    import uvicorn

    from evoforge.api import guards
    from evoforge.api.app import create_app

    open_sessions(db)  # fail early, with a clear message, on a bad database URL
    if workers > 1:
        _serve_processes(workers, host=host, port=port, db=db, broker_url=broker_url,
                         log_level=log_level, allowed_hosts=allowed_hosts,
                         allowed_origins=allowed_origins, max_body_mb=max_body_mb)
        return
    try:
        app = create_app(db, broker_url=broker_url, bind_host=host,
                         allowed_hosts=list(allowed_hosts) or None,
                         allowed_origins=list(allowed_origins) or None,
                         max_body_bytes=None if max_body_mb is None else int(max_body_mb * guards.MiB),
                         server=True)
    except ValueError as exc:   # a bad origin or $EVOFORGE_MAX_BODY_BYTES
        raise click.ClickException(str(exc)) from None
    if host.strip() in guards.WILDCARD_BINDS and not (allowed_hosts or guards.env_list(guards.ALLOWED_HOSTS_ENV)):
        click.echo(f"note: bound to {host or 'all addresses'} without --allowed-host: any Host header "
                   "is served (name the server's host names to refuse DNS-rebinding requests)", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, proxy_headers=False)


def _serve_processes(workers: int, *, host, port, db, broker_url, log_level, allowed_hosts,
                     allowed_origins, max_body_mb) -> None:
    """`serve --workers N`: uvicorn's supervisor starts N processes (spawned, each importing the
    app factory `evoforge.api.app:create_app_from_env`, so the settings travel in the
    environment) that accept on one socket, and restarts one that dies. The campaign runner
    cannot be in-process then (each process would run the same campaigns), so a broker is
    required. Migrations run here, once, before any process starts."""
    import os

    import uvicorn

    from evoforge.api import app as api_app
    from evoforge.api import guards
    from evoforge.db.engine import default_url, upgrade

    broker = broker_url if broker_url is not None else os.environ.get(api_app.BROKER_ENV, "")
    if not broker:
        raise click.ClickException(
            f"--workers {workers} needs a broker (--broker-url or ${api_app.BROKER_ENV}) and "
            "`evoforge worker` processes: without one, campaigns run inside the API process, "
            "and N processes would each run them. Use --workers 1 without a broker.")
    env = {api_app.BROKER_ENV: broker, api_app.SERVE_ENV["db_url"]: db or default_url(),
           api_app.SERVE_ENV["bind_host"]: host}
    if allowed_hosts:
        env[guards.ALLOWED_HOSTS_ENV] = ",".join(allowed_hosts)
    if allowed_origins:
        env[guards.ALLOWED_ORIGINS_ENV] = ",".join(allowed_origins)
    if max_body_mb is not None:
        env[guards.MAX_BODY_ENV] = str(int(max_body_mb * guards.MiB))
    os.environ.update(env)
    try:  # the checks create_app makes (origins, body limit), here, once, with a clear message
        guards.edge_settings(allowed_hosts=None, allowed_origins=None, max_body_bytes=None)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    upgrade(env[api_app.SERVE_ENV["db_url"]])  # once: N processes migrating at once would race
    if host.strip() in guards.WILDCARD_BINDS and not (allowed_hosts or guards.env_list(guards.ALLOWED_HOSTS_ENV)):
        click.echo(f"note: bound to {host or 'all addresses'} without --allowed-host: any Host header "
                   "is served (name the server's host names to refuse DNS-rebinding requests)", err=True)
    uvicorn.run("evoforge.api.app:create_app_from_env", factory=True, workers=workers, host=host,
                port=port, log_level=log_level, proxy_headers=False)


@click.group()
def apikey() -> None:
    """API keys (each belongs to a project)."""


@apikey.command(name="create")
@click.option("--project", required=True, help="Project name (created if needed).")
@click.option("--db", default=None, help=DB_HELP)
@click.option("--json", "as_json", is_flag=True)
def apikey_create(project, db, as_json) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from evoforge.db.apikeys import create_key

    sessions = open_sessions(db)
    try:
        key, _pid = create_key(sessions, project)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json({"key": key, "project": project.strip()})
    else:
        click.echo(key)
        click.echo(f"API key for project {project.strip()!r}; it is shown only now.", err=True)


@apikey.command(name="list")
@click.option("--project", default=None)
@click.option("--db", default=None, help=DB_HELP)
@click.option("--json", "as_json", is_flag=True)
def apikey_list(project, db, as_json) -> None:
    """List keys (prefix only)."""
    from evoforge.db.apikeys import list_keys

    rows = [{"id": k.id, "project": k.project, "prefix": k.prefix, "created_at": k.created_at,
             "revoked": k.revoked} for k in list_keys(open_sessions(db), project)]
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        click.echo(f"{r['id']:5d}  {r['prefix']}...  {safe(r['project'], one_line=True):20s} "
                   f"{'revoked' if r['revoked'] else 'active'}")


@apikey.command(name="revoke")
@click.argument("key_id", type=int)
@click.option("--db", default=None, help=DB_HELP)
def apikey_revoke(key_id, db) -> None:
    """Revoke key KEY_ID (see `apikey list`)."""
    from evoforge.db.apikeys import revoke_key

    if not revoke_key(open_sessions(db), key_id):
        raise click.ClickException(f"no active key {key_id}")
    click.echo(f"revoked key {key_id}")
