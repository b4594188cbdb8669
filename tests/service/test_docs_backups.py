"""The hub guide's backup commands copy a live ``hub.db`` (a hub process running, in WAL mode)
into a database ``kiln token ls`` reads. What the pages hold: tests/unit/test_docs.py."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.test_docs import ROOT

BACKUP_TO = "/var/backups/kiln-hub.db"
BACKUPS = [
    f'sqlite3 hub.db ".backup {BACKUP_TO}"',
    f"python3 -c \"import sqlite3; sqlite3.connect('hub.db').backup(sqlite3.connect('{BACKUP_TO}'))\"",
]


def _kiln(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiln.cli", *args], capture_output=True, text=True, check=True, cwd=cwd, timeout=60
    )


def test_the_hub_guides_backups_copy_a_live_hub_db(tmp_path: Path) -> None:
    guide = (ROOT / "docs" / "guides" / "hub.md").read_text()
    data = tmp_path / "data"
    log = tmp_path / "hub.log"
    with log.open("wb") as out:
        hub = subprocess.Popen(
            [sys.executable, "-m", "kiln.cli", "hub", "--port", "0", "--data-dir", str(data)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "listening on" not in log.read_text() and time.monotonic() < deadline:
            assert hub.poll() is None, log.read_text()
            time.sleep(0.05)
        _kiln("token", "create", "--role", "admin", "--name", "ops", "--data-dir", str(data))
        assert (data / "hub.db-wal").exists(), "the hub keeps hub.db in WAL mode"
        for i, command in enumerate(BACKUPS):
            assert command in guide, f"docs/guides/hub.md gives this backup command: {command}"
            if command.startswith("sqlite3") and shutil.which("sqlite3") is None:
                pytest.fail("sqlite3 is missing: apt-get install -y sqlite3 (scripts/ensure-system.sh)")
            copy = tmp_path / f"backup-{i}" / "hub.db"
            copy.parent.mkdir()
            subprocess.run(command.replace(BACKUP_TO, str(copy)), shell=True, cwd=data, check=True, timeout=60)
            with contextlib.closing(sqlite3.connect(copy)) as db:
                assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            listed = _kiln("token", "ls", "--data-dir", str(copy.parent)).stdout
            assert re.search(r"\badmin\s+ops\b", listed), listed
    finally:
        hub.send_signal(signal.SIGINT)
        hub.wait(timeout=30)
