"""``kiln usage`` (a process) sums what a run of the hub's core wrote to a real database, per
requestor and per provider. (The restarts themselves: tests/unit/test_hub_restart.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.unit.test_hub_restart import crash, provider, rent, requestor, run_of


def test_kiln_usage_sums_the_record_per_requestor_and_per_provider(tmp_path: Path) -> None:
    run = run_of(tmp_path)
    provider(run, 1)
    requestor(run, 2)
    run.wall = 1000.0
    first, second = rent(run, 2, 1), rent(run, 2, 2)
    for rid, activity, cpu in ((3, first, 12.5), (4, second, None)):
        run.wall += 3600  # one ends an hour on, the other two
        [(_, destroy)] = run.send(2, {"type": "release", "id": rid, "activity": activity})
        run.send(1, {"type": "done", "re": destroy["id"], **({"cpu_seconds": cpu} if cpu else {})})
    crash(run)
    shown = subprocess.run(
        [sys.executable, "-m", "kiln.cli", "usage", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    header, row = shown.stdout.splitlines()
    assert header.split() == ["REQUESTOR", "CREDENTIAL", "ACTIVITIES", "CPU-HOURS", "CPU-SECONDS", "USED", "GIB-HOURS"]
    # Each held 1 CPU and 256 MiB: one for an hour, one for two.
    assert row.split() == ["r", "-", "2", "3.000", "12.5", "0.750"]
    by_provider = subprocess.run(
        [sys.executable, "-m", "kiln.cli", "usage", "--by", "provider", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert by_provider.stdout.splitlines()[1].split() == ["p", "2", "3.000", "12.5", "0.750"]
