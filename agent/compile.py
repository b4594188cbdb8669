"""Compile ``kiln-agent.c`` into the static binary task containers run as PID 1.

    python agent/compile.py [--arch x86_64|aarch64] [-o OUT]
    python agent/compile.py --requirement       # prints the compiler's pip requirement

``make agent`` (this machine's architecture, into ``agent/build/kiln-agent``), ``make dist``
and the wheel's build hook (``hatch_build.py``) all compile through :func:`compile_agent`, so
the binary the tests run is built as the one a wheel ships.

The compiler is Zig's ``zig cc`` from the ``ziglang`` package on PyPI (``python -m ziglang``):
clang with musl's sources for every target, so one ``pip install`` cross-compiles a static
binary for both architectures on a machine that has no C toolchain at all. Debian's
musl-tools (what built the agent before) compiles for the host only and needs a system
package; a cross musl-gcc needs a toolchain per target. Measured on x86_64: 45 KiB for
x86_64 and 51 KiB for aarch64 (musl-gcc made 57 KiB); the first build for a target takes
about 30 s (Zig builds musl once into ``~/.cache/zig``), later ones 0.1 s.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
from pathlib import Path
from typing import Final

SOURCE: Final = Path(__file__).resolve().parent / "kiln-agent.c"
TARGETS: Final = {"x86_64": "x86_64-linux-musl", "aarch64": "aarch64-linux-musl"}
"""The architectures a wheel is built for (``platform.machine()`` names), and Zig's target for each."""
ALIASES: Final = {"amd64": "x86_64", "arm64": "aarch64"}
REQUIREMENT: Final = "ziglang>=0.17,<0.18"
"""The compiler, as pip names it: ``make zig`` installs it, and the wheel's build hook asks for it."""
FLAGS: Final = ("-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror")
"""Static, small, stripped; every warning is an error."""


def host_arch() -> str:
    """This machine's architecture as :data:`TARGETS` names it (``arm64`` is ``aarch64``)."""
    machine = platform.machine().lower()
    return ALIASES.get(machine, machine)


def compile_agent(arch: str, out: Path) -> None:
    """Write the agent for ``arch`` to ``out`` (its folder is made). Raises ``ValueError`` for
    an architecture not in :data:`TARGETS`, ``RuntimeError`` when the compiler fails."""
    if arch not in TARGETS:
        raise ValueError(f"no agent for {arch!r}: it is built for {', '.join(TARGETS)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "ziglang", "cc", "-target", TARGETS[arch], *FLAGS, "-o", str(out), str(SOURCE)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        hint = " (pip install ziglang)" if "No module named ziglang" in done.stderr else ""
        raise RuntimeError(f"compiling the agent for {arch} failed{hint}: {' '.join(command)}\n{done.stderr}")


def main() -> int:
    parser = argparse.ArgumentParser(description="Compile the static kiln-agent with zig cc (python -m ziglang).")
    parser.add_argument("--arch", default=host_arch(), help=f"one of {', '.join(TARGETS)} (default: this machine's)")
    parser.add_argument("-o", "--out", type=Path, default=SOURCE.parent / "build" / "kiln-agent")
    parser.add_argument("--requirement", action="store_true", help="print the compiler's pip requirement, and stop")
    args = parser.parse_args()
    if args.requirement:
        print(REQUIREMENT)
        return 0
    try:
        compile_agent(args.arch, args.out)
    except (ValueError, RuntimeError) as e:
        print(f"agent/compile.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
