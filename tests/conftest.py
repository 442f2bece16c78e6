import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def db_url(tmp_path):
    """A fresh SQLite database, migrated to head."""
    from evoforge.db.engine import upgrade

    url = f"sqlite:///{tmp_path / 'evoforge.db'}"
    upgrade(url)
    return url


@pytest.fixture
def sessions(db_url):
    from evoforge.db.engine import session_factory

    return session_factory(db_url)


@pytest.fixture(scope="session")
def fork_sandbox():
    from evoforge.sandbox import make_sandbox

    sb = make_sandbox("fork")
    yield sb
    sb.close()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Never touch the user's real ~/.local/share/evoforge from tests."""
    monkeypatch.setenv("EVOFORGE_HOME", str(tmp_path / "evoforge-home"))
    monkeypatch.delenv("EVOFORGE_DATABASE_URL", raising=False)
