"""Which ``kiln-agent`` binary task containers run: found, and checked to be one that can run there.

Every task container runs the agent (``agent/kiln-agent.c``) as PID 1, bind-mounted from the
host (:class:`~kiln_provider.docker_adapter.DockerAdapter` mounts what :func:`find_agent`
chose). It must be a static 64-bit ELF for the machine's architecture: images may hold no
libc. Nothing here calls Docker; ``kiln doctor`` asks the same question.
"""

from __future__ import annotations

import os
import platform
import struct
from pathlib import Path
from typing import Final

from kiln_provider.errors import DockerFailed

AGENT_MACHINES: Final = {"x86_64": 62, "aarch64": 183}
"""The architectures a kiln wheel carries an agent for, and the ELF ``e_machine`` of each."""
_MACHINE_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}
_PT_INTERP = 3
"""The program header of an ELF that asks for a dynamic loader."""


def machine_arch() -> str:
    """This machine's architecture as agent binaries are named: ``platform.machine()``, with
    ``arm64`` as ``aarch64`` and ``amd64`` as ``x86_64``."""
    machine = platform.machine().lower()
    return _MACHINE_ALIASES.get(machine, machine)


def find_agent(arch: str | None = None) -> str:
    """The agent binary to mount in task containers, for ``arch`` (default: :func:`machine_arch`).

    Looks in order at ``$KILN_AGENT`` (an override: when set, it must name an executable static
    ELF for ``arch``), the agent a platform wheel installed (``kiln_provider/bin/kiln-agent-<arch>``),
    and the one ``make agent`` builds in a source tree (``agent/build/kiln-agent``).
    DockerFailed, naming what was looked at and why it does not do, if none fits.
    """
    arch = arch or machine_arch()
    override = os.environ.get("KILN_AGENT", "")
    if override:
        if problem := _unfit_agent(Path(override), arch):
            raise DockerFailed(f"$KILN_AGENT names {override}, which {problem}")
        return os.path.realpath(override)
    here = Path(__file__).resolve().parent
    places = (
        (here / "bin" / f"kiln-agent-{arch}", "from a platform wheel"),
        (here.parent.parent / "agent" / "build" / "kiln-agent", "from make agent in a source tree"),
    )
    looked = []
    for path, source in places:
        problem = _unfit_agent(path, arch)
        if problem is None:
            return os.path.realpath(path)
        looked.append(f"{path} ({source}) {problem}")
    if arch not in AGENT_MACHINES:
        looked.append(f"kiln builds the agent for {' and '.join(AGENT_MACHINES)} only")
    raise DockerFailed(
        f"no kiln-agent binary for {arch}: $KILN_AGENT is not set, {', and '.join(looked)}; install kiln from a "
        f"wheel built for {arch}, run `make agent` in the source tree, or name the binary in $KILN_AGENT"
    )


def _unfit_agent(path: Path, arch: str) -> str | None:
    """Why ``path`` cannot be the agent for ``arch``, or None if it can: it must be a static
    64-bit ELF for ``arch`` (it runs as PID 1 in images that have no libc)."""
    if not path.exists():
        return "does not exist"
    if not path.is_file() or not os.access(path, os.X_OK):
        return "is not an executable file"
    try:
        with path.open("rb") as f:
            header = f.read(64)
            if len(header) < 64 or header[:4] != b"\x7fELF":
                return "is not an ELF binary"
            if header[4] != 2:  # EI_CLASS
                return "is not a 64-bit ELF binary"
            order = "<" if header[5] == 1 else ">"
            (machine,) = struct.unpack_from(order + "H", header, 18)  # e_machine
            if machine != AGENT_MACHINES.get(arch):
                names = {number: name for name, number in AGENT_MACHINES.items()}
                return f"is built for {names.get(machine, f'ELF machine {machine}')}, not {arch}"
            (table_at,) = struct.unpack_from(order + "Q", header, 32)  # e_phoff
            size, count = struct.unpack_from(order + "HH", header, 54)  # e_phentsize, e_phnum
            f.seek(table_at)
            table = f.read(size * count)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    kinds = [struct.unpack_from(order + "I", table, at)[0] for at in range(0, len(table) - 3, max(size, 4))]
    if _PT_INTERP in kinds:
        return "is linked dynamically (it runs in images that have no libc): build it static"
    return None
