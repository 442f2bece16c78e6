"""Several processes opening one new SQLite file at once: the switch to WAL must wait for a
connection that holds the write lock of the still empty file, not fail with 'database is locked'
(SQLite returns SQLITE_BUSY there without calling the busy handler)."""
import sqlite3
import threading
import time

from evoforge.db import engine as dbe


def test_wal_switch_waits_for_a_writer_on_a_new_file(tmp_path):
    path = tmp_path / "new.db"
    path.touch()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # the file is still empty: no WAL header yet
    plain = sqlite3.connect(path, timeout=5, isolation_level=None)
    try:  # what SQLite does without the retry
        plain.execute("PRAGMA journal_mode=WAL")
        raise AssertionError("expected 'database is locked' at once")
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
    finally:
        plain.close()
    threading.Timer(0.3, lambda: holder.execute("COMMIT")).start()
    started = time.monotonic()
    with dbe.get_engine(f"sqlite:///{path}").connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert time.monotonic() - started >= 0.25
    holder.close()
