"""``kiln token``, ``kiln usage``, ``kiln credit grant`` and ``kiln ledger [check]`` given ``--db``: a
PostgreSQL database (a real server: the ``postgres_url`` fixture) or a SQLite file, run as the
command itself (``python -m kiln.cli``) beside what a hub's state wrote; a bad URL said in one line,
its password never shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kiln.hub.io.state import FILE_NAME, HubState
from kiln.hub.records import EndLease, LeaseRecord, SaveLease, SessionRecord
from kiln.protocol.messages import Resources

PASSWORD = "s3cret-pass"


def kiln_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command run in ``cwd`` (no ``KILN_`` setting of the caller's): exit code, stdout, stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    argv = [sys.executable, "-m", "kiln.cli", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd=cwd, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_the_admin_commands_work_on_a_postgresql_database(tmp_path: Path, postgres_url: str) -> None:
    made = kiln_cli(tmp_path, "token", "create", "--role", "requestor", "--name", "alice", "--db", postgres_url)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert f"in {postgres_url}" in made.stderr
    assert list(tmp_path.iterdir()) == [], "a command is no hub: it leaves no hub-id (nor hub.db) behind"
    provider = kiln_cli(
        tmp_path, "token", "create", "--role", "provider", "--name", "p1", "--db", postgres_url, "--json"
    )
    assert json.loads(provider.stdout)["id"] == 2

    listed = kiln_cli(tmp_path, "token", "ls", "--db", postgres_url, "--json")
    assert [(c["id"], c["role"], c["name"]) for c in json.loads(listed.stdout)["credentials"]] == [
        (1, "requestor", "alice"),
        (2, "provider", "p1"),
    ]
    granted = kiln_cli(tmp_path, "credit", "grant", "alice", "2.5", "--db", postgres_url, "--json")
    assert granted.returncode == 0, granted.stderr
    assert json.loads(granted.stdout)["balance"] == 2_500_000

    with HubState(postgres_url, hub="aaa") as state:  # what a hub on that database wrote
        assert state.find(token) is not None and state.balance("requestor:1") == 2_500_000
        alice = SessionRecord("s1", "alice", 1, b"\x01" * 32)
        state.apply(SaveLease(LeaseRecord("a1", "s1", "p1", Resources(cpus=2, memory=2**30), None, None, 0.0), alice))
        state.apply(EndLease("a1", 3600.0, 90.0))
    usage = kiln_cli(tmp_path, "usage", "--db", postgres_url, "--json")
    assert [(t["who"], t["activities"], t["cpu_seconds_rented"]) for t in json.loads(usage.stdout)["totals"]] == [
        ("alice", 1, 7200.0)
    ]
    by_provider = kiln_cli(tmp_path, "usage", "--by", "provider", "--db", postgres_url)
    assert by_provider.stdout.splitlines()[1].split()[:2] == ["p1", "1"]

    ledger = kiln_cli(tmp_path, "ledger", "--db", postgres_url, "--json")
    [grant] = json.loads(ledger.stdout)["transactions"]
    assert grant["kind"] == "grant" and grant["entries"][1] == {"account": "requestor:1", "amount": 2_500_000}
    checked = kiln_cli(tmp_path, "ledger", "check", "--db", postgres_url)
    assert (checked.returncode, checked.stdout) == (0, "the ledger balances: 1 transactions, 2 accounts checked\n")

    with HubState(postgres_url) as state, state.database.write() as db:
        db.execute("UPDATE ledger_balances SET balance = balance + 1 WHERE account = 'requestor:1'")
    broken = kiln_cli(tmp_path, "ledger", "check", "--db", postgres_url, "--json")
    assert broken.returncode == 1 and json.loads(broken.stdout)["problems"] == [
        "account requestor:1: its cached balance is 2500001, its entries sum to 2500000"
    ]
    revoked = kiln_cli(tmp_path, "token", "revoke", "alice", "--db", postgres_url)
    assert (revoked.returncode, revoked.stdout) == (0, "revoked requestor credential 1 (alice)\n")
    assert list(tmp_path.iterdir()) == []
    # The server trusts loopback, so a password in the URL is taken and not needed: it is not shown either.
    with_password = postgres_url.replace("kiln@", f"kiln:{PASSWORD}@", 1)
    made = kiln_cli(tmp_path, "token", "create", "--role", "admin", "--db", with_password)
    assert made.returncode == 0 and PASSWORD not in made.stderr + made.stdout
    assert f"in {postgres_url.replace('kiln@', 'kiln:***@', 1)}" in made.stderr


def test_a_sqlite_file_given_as_db_is_the_hubs_database(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / FILE_NAME
    made = kiln_cli(tmp_path, "token", "create", "--role", "admin", "--db", str(path))
    assert made.returncode == 0, made.stderr
    with HubState(path) as state:
        assert state.find(made.stdout.strip()) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]


def test_a_database_that_cannot_be_reached_is_said_in_one_line_without_its_password(
    tmp_path: Path, postgres_url: str
) -> None:
    with_password = postgres_url.replace("kiln@", f"kiln:{PASSWORD}@", 1)
    server, _, _ = with_password.rpartition("/")
    for command, url, said in (
        (("token", "ls"), f"{server}/no_such_database", 'database "no_such_database" does not exist'),
        (("usage",), f"postgresql://kiln:{PASSWORD}@127.0.0.1:1/x", "Connection refused"),
        (("credit", "grant", "alice", "1"), f"{postgres_url}?password={PASSWORD}&port=1", "Connection refused"),
        (("ledger", "check"), f"postgresql://kiln:{PASSWORD}@127.0.0.1:port/x", 'invalid integer value "port"'),
        (("token", "create", "--role", "admin"), f"postgresql://kiln:{PASSWORD}@[::1/x", "not a PostgreSQL URL"),
    ):
        done = kiln_cli(tmp_path, *command, "--db", url)
        assert done.returncode == 1 and done.stdout == "", (url, command, done.stderr)
        assert len(done.stderr.splitlines()) == 1 and said in done.stderr, (url, done.stderr)
        assert PASSWORD not in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []
