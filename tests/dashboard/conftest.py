"""Fixtures of the dashboard's browser tests: Chromium (skipped, or failed under
EVOFORGE_REQUIRE_SERVICES=1, when it is missing) and a dashboard server on a fresh SQLite file."""
import os

import pytest

from tests.dashboard import browser as B


@pytest.fixture(scope="module")
def browser():
    reason = B.missing()
    if reason:
        if os.environ.get("EVOFORGE_REQUIRE_SERVICES") == "1":
            pytest.fail(f"browser required (EVOFORGE_REQUIRE_SERVICES=1): {reason}")
        pytest.skip(reason)
    with B.chromium() as b:
        yield b


@pytest.fixture
def server(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    with B.serve(f"sqlite:///{tmp_path / 'dash.db'}", home) as url:
        yield url
