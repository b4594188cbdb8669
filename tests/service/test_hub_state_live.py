"""The hub's SQLite file shared while it is used: ``kiln token`` writing in a process of its own
while a reader holds a transaction, and a hub starting on a real port rolling up its usage
record. The state by itself: tests/unit/test_hub_state.py."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.hub.io.server import start
from kiln.hub.io.state import DAY, HubState
from kiln.hub.records import EndLease, LeaseRecord, SaveLease, SessionRecord
from kiln.protocol.messages import Resources


@pytest.fixture
def state(tmp_path: Path) -> Iterator[HubState]:
    with HubState.in_dir(tmp_path) as opened:
        yield opened


def test_the_cli_writes_while_a_reader_holds_a_transaction(state: HubState) -> None:
    """WAL: a hub in the middle of a read never stops ``kiln token`` writing, nor sees half of it."""
    reader = sqlite3.connect(state.where, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM credentials").fetchone() == (0,)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kiln.cli",
            "token",
            "create",
            "--role",
            "requestor",
            "--data-dir",
            str(Path(state.where).parent),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = done.stdout.splitlines()[-1]
    assert reader.execute("SELECT count(*) FROM credentials").fetchone() == (0,)  # its snapshot
    reader.execute("COMMIT")
    reader.close()
    assert "created requestor credential 1" in done.stderr
    found = state.find(token)
    assert found is not None and found.role == "requestor"


async def test_a_hub_rolls_up_its_usage_record_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    session = SessionRecord("s1", "alice", None, b"\1" * 32)
    with HubState.in_dir(tmp_path) as state:
        for n, ended in enumerate([time.time() - 3 * DAY, time.time() - 2 * DAY, time.time()]):
            lease = LeaseRecord(f"a{n}", "s1", "p1", Resources(cpus=1, memory=2**20), None, None, ended - 60)
            state.apply(SaveLease(lease, session))
            state.apply(EndLease(lease.id, ended, None))
        totals = state.usage_totals()
    caplog.set_level("INFO", logger="kiln.hub")
    async with start("127.0.0.1", 0, data_dir=tmp_path, usage_retention=1):
        pass
    assert "usage: 2 activities that ended over 1 days ago rolled up per day" in caplog.text
    with HubState.in_dir(tmp_path) as state:
        assert [u["activity"] for u in state.usage()] == ["a2"] and len(state.usage_days()) == 2
        assert state.usage_totals() == totals
