"""docker-compose.yml stays in step with the processes CI starts (no Docker engine runs here).

Every EvoForge service's command must be a real `evoforge` subcommand whose options the CLI
accepts, its environment must be variables the code really reads, every queue must have a
consumer, and the sandboxed evaluation workers must get the privileges the fork-server needs.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import click
import pytest
import yaml

from evoforge.cli.main import main
from tests.integration.services import EVOFORGE, ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
EVOFORGE_SERVICES = {name: svc for name, svc in SERVICES.items() if svc.get("image") == "evoforge:latest"}
CODE_DIRS = ("api", "worker", "db", "sandbox", "evaluators", "evolution", "migrations")


def _resolve(args: list[str]) -> tuple[list[str], click.Command, list[str]]:
    cmd: click.Command = main
    path: list[str] = []
    args = list(args)
    while isinstance(cmd, click.Group):
        assert args, f"{path} needs a subcommand"
        name = args.pop(0)
        sub = cmd.get_command(click.Context(cmd), name)
        assert sub is not None, f"`evoforge {' '.join(path + [name])}` is not a command"
        cmd, path = sub, path + [name]
    return path, cmd, args


def _env_names_read_by_code() -> set[str]:
    names: set[str] = set()
    for d in CODE_DIRS:
        for f in (ROOT / d).rglob("*.py"):
            names |= set(re.findall(r"[\"'](EVOFORGE_[A-Z0-9_]+)[\"']", f.read_text(errors="replace")))
    return names


def test_every_expected_service_exists():
    assert {"postgres", "redis", "migrate", "api", "worker-llm", "worker-eval", "worker-gpu",
            "beat"} <= set(SERVICES)
    assert set(EVOFORGE_SERVICES) == {"migrate", "api", "worker-llm", "worker-eval", "worker-gpu", "beat"}


@pytest.mark.parametrize("name", sorted(EVOFORGE_SERVICES))
def test_command_is_a_real_subcommand_with_accepted_options(name):
    path, cmd, rest = _resolve(EVOFORGE_SERVICES[name]["command"])
    cmd.make_context(" ".join(["evoforge"] + path), list(rest))  # raises on an unknown option/value


def test_subcommands_help_runs_as_a_process():
    paths = {tuple(_resolve(svc["command"])[0]) for svc in EVOFORGE_SERVICES.values()}
    for path in sorted(paths):
        out = subprocess.run(EVOFORGE + list(path) + ["--help"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0 and "Usage:" in out.stdout, (path, out.stderr)


def test_environment_matches_what_the_code_reads():
    from evoforge.db.engine import ENV_URL
    from evoforge.worker.celery_app import BROKER_ENV, VISIBILITY_ENV

    read = _env_names_read_by_code()
    assert {ENV_URL, BROKER_ENV, VISIBILITY_ENV} <= read
    for name, svc in EVOFORGE_SERVICES.items():
        env = svc.get("environment") or {}
        unknown = set(env) - read
        assert not unknown, f"{name} sets variables no code reads: {unknown}"
        assert ENV_URL in env, f"{name} has no database"
        if name != "migrate":
            assert BROKER_ENV in env, f"{name} has no broker (the API would run campaigns in-process)"
        assert env[ENV_URL].startswith("postgresql://") and "@postgres:" in env[ENV_URL]
        assert env.get(BROKER_ENV, "redis://redis:").startswith("redis://redis:")


def test_every_queue_is_consumed_and_gpu_is_a_profile():
    from evoforge.worker.celery_app import QUEUES

    consumed: dict[str, str] = {}
    for name, svc in EVOFORGE_SERVICES.items():
        path, cmd, rest = _resolve(svc["command"])
        if path == ["worker"]:
            ctx = cmd.make_context("evoforge worker", list(rest))
            for q in ctx.params["queues"].split(","):
                assert q in QUEUES, (name, q)
                consumed[q] = name
    assert set(consumed) == set(QUEUES)
    gpu = SERVICES[consumed["gpu"]]
    assert gpu.get("profiles") == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_sandboxed_workers_get_namespaces():
    for name in ("worker-eval", "worker-gpu"):
        svc = SERVICES[name]
        assert "SYS_ADMIN" in svc.get("cap_add", []), name
        assert any(o.startswith("seccomp=") for o in svc.get("security_opt", [])), name


def test_dependencies_and_healthchecks():
    for name, svc in SERVICES.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in SERVICES, (name, dep)
            if cond.get("condition") == "service_healthy":
                assert "healthcheck" in SERVICES[dep], (name, dep)
        if name != "migrate":
            assert "healthcheck" in svc, f"{name} has no healthcheck"
    assert SERVICES["migrate"]["restart"] == "no"
    for name in set(EVOFORGE_SERVICES) - {"migrate"}:
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_dockerfile_runs_the_cli_as_a_non_root_user():
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert 'ENTRYPOINT ["evoforge"]' in text
    assert "pip install ." in text
    for d in CODE_DIRS:
        assert f"COPY {d} ./{d}" in text, d
