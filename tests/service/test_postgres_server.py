"""The PostgreSQL server of the tests (kiln.testing.postgres, the fixtures ``postgres`` and
``postgres_url``): a real server from Debian's binaries, reached with psycopg over loopback."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from kiln.testing.postgres import LocalPostgres

pytestmark = pytest.mark.timeout(60)


def test_each_database_is_fresh_and_apart_from_the_others(postgres: LocalPostgres, postgres_url: str) -> None:
    other = postgres.create_database("other")
    with psycopg.connect(postgres_url, autocommit=True) as mine:
        assert mine.execute("SELECT current_user").fetchone() == ("kiln",)
        assert mine.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
        mine.execute("CREATE TABLE kept (n int)")
        mine.execute("INSERT INTO kept VALUES (1)")
    with psycopg.connect(other) as theirs:
        assert theirs.execute("SELECT to_regclass('kept')").fetchone() == (None,)
    with psycopg.connect(postgres_url) as mine:
        assert mine.execute("SELECT n FROM kept").fetchall() == [(1,)]
    with pytest.raises(psycopg.errors.DuplicateDatabase):
        postgres.create_database("other")


def test_leaving_the_block_stops_the_server_and_keeps_its_log(tmp_path: Path) -> None:
    with LocalPostgres(tmp_path) as server:
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT current_setting('fsync')").fetchone() == ("off",)
        url = server.url
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=5)
    assert "database system is shut down" in (tmp_path / "log").read_text()
