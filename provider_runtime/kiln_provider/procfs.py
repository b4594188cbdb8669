"""What the host's ``/proc`` and cgroup files tell of a container's processes (the provider runs
beside dockerd, so it sees them): the CPU time and memory of a container's cgroup, who its agent
runs as. :func:`cgroup_of` finds a container's files once; :class:`Cgroup` then reads them (a few
microseconds each, but file reads: off the event loop).

Nothing here calls Docker; :class:`~kiln_provider.docker_adapter.DockerAdapter` asks Docker for
a container's PID and reads the rest here, and ``kiln doctor`` checks that the cgroup is readable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

from kiln_provider.errors import DockerFailed

CpuFile: TypeAlias = tuple[Literal["v1", "v2"], Path]
"""cgroup v2's ``cpu.stat`` or v1's ``cpuacct.usage``: where a cgroup's CPU time is."""


@dataclass(frozen=True)
class Cgroup:
    """Where a container's cgroup keeps its CPU time and its memory (None: not readable here)."""

    cpu: CpuFile | None
    memory: Path | None
    """cgroup v2's ``memory.current`` or v1's ``memory.usage_in_bytes``."""

    def cpu_seconds(self) -> float | None:
        """The CPU time of the cgroup's processes so far; None once the cgroup is gone (or unreadable)."""
        return _read_cpu(self.cpu)

    def memory_bytes(self) -> int | None:
        """The memory the cgroup's processes use now (page cache included, as the limit counts it)."""
        if self.memory is None:
            return None
        try:
            return int(self.memory.read_text())
        except (OSError, ValueError):
            return None


def cgroup_of(pid: int) -> Cgroup:
    """The cgroup files of process ``pid`` (a container's agent, found once when it starts)."""
    return Cgroup(cgroup_cpu_file(pid), _memory_file(pid))


def _memory_file(pid: int) -> Path | None:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                current = Path(f"/sys/fs/cgroup{path}/memory.current")
                return current if os.access(current, os.R_OK) else None
            if "memory" in controllers.split(","):
                usage = Path(f"/sys/fs/cgroup/{controllers}{path}/memory.usage_in_bytes")
                return usage if os.access(usage, os.R_OK) else None
    except (OSError, ValueError):
        pass
    return None


def cgroup_cpu_file(pid: int) -> CpuFile | None:
    """Where the CPU time of the cgroup process ``pid`` is in can be read here: cgroup v2's
    ``cpu.stat`` or v1's ``cpuacct.usage`` (what :func:`cgroup_cpu_seconds` reads)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if controllers == "":  # cgroup v2: one hierarchy
                stat = Path(f"/sys/fs/cgroup{path}/cpu.stat")
                return ("v2", stat) if os.access(stat, os.R_OK) else None
            if "cpuacct" in controllers.split(","):
                for mount in ("cpuacct", "cpu,cpuacct", controllers):
                    usage = Path(f"/sys/fs/cgroup/{mount}{path}/cpuacct.usage")
                    if os.access(usage, os.R_OK):
                        return "v1", usage
    except (OSError, ValueError):
        pass
    return None


def cgroup_cpu_seconds(pid: int) -> float | None:
    """The CPU time of the cgroup process ``pid`` is in (cgroup v1's cpuacct or v2), if readable here."""
    return _read_cpu(cgroup_cpu_file(pid))


def _read_cpu(found: CpuFile | None) -> float | None:
    try:
        if found is not None and found[0] == "v2":
            with open(found[1]) as f:
                fields = dict(row.split() for row in f if row.strip())
            return int(fields["usage_usec"]) / 1e6
        if found is not None:
            return int(found[1].read_text()) / 1e9
    except (OSError, ValueError, KeyError):
        pass
    return None


def ids_of(pid: int) -> tuple[int, int]:
    """The uid and gid process ``pid`` runs as (seen from the host: the provider runs beside dockerd)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])
    except (OSError, KeyError, ValueError, IndexError) as e:
        raise DockerFailed(f"cannot tell who the container's agent (pid {pid}) runs as: {e}") from e
