"""What the benchmarks share: how a run of latencies is told, and a process's memory."""

from __future__ import annotations

import statistics
from pathlib import Path


def describe(samples: list[float]) -> str:
    """Latencies in seconds as ``median …, p99 … (n=…)``, in milliseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(ordered) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms (n={len(ordered)})"


def rss(pid: int) -> int:
    """The resident memory of process ``pid``, in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
