"""The wheel's build hook: a platform wheel that carries the static agent for one architecture.

The agent (``agent/kiln-agent.c``) is compiled by ``agent/compile.py`` (Zig's ``cc`` from
the ``ziglang`` package, which :meth:`AgentBuildHook.dependencies` asks the build front end for) for the architecture
in ``$KILN_AGENT_ARCH`` (``make dist`` sets it, once per architecture), else for the building
machine's. It lands in the wheel as ``kiln_provider/bin/kiln-agent-<arch>``, where
``kiln_provider.agent_binary.find_agent`` looks for it, and the wheel is tagged for that
platform: the agent is static, so any glibc (manylinux2014) and musl (musllinux) will do.

``KILN_AGENT_ARCH=none``, or a building machine that is not Linux on x86_64 or aarch64 (a
requestor's Mac, say), gives a pure ``py3-none-any`` wheel without an agent: the SDK and the
hub need none, and a provider there can name one in ``$KILN_AGENT``. An editable install gets
none either: it runs the source tree's ``agent/build/kiln-agent`` (``make agent``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.config import BuilderConfig
from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class AgentBuildHook(BuildHookInterface[BuilderConfig]):
    PLUGIN_NAME = "kiln-agent"

    def dependencies(self) -> list[str]:
        """The compiler (``ziglang``) when the wheel gets an agent; the build front end installs it."""
        return [] if self._arch() == "none" else [self._compiler().REQUIREMENT]

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        self._folder: str | None = None
        arch = self._arch()
        if version == "editable" or arch == "none":
            return
        compiler = self._compiler()
        if arch not in compiler.TARGETS:
            targets = " and ".join(compiler.TARGETS)
            raise ValueError(f"KILN_AGENT_ARCH={arch}: the agent is built for {targets} (none: a wheel without it)")
        self._folder = tempfile.mkdtemp(prefix="kiln-agent-")
        binary = Path(self._folder) / f"kiln-agent-{arch}"
        compiler.compile_agent(arch, binary)
        build_data["force_include"][str(binary)] = f"kiln_provider/bin/kiln-agent-{arch}"
        build_data["pure_python"] = False
        build_data["tag"] = f"py3-none-manylinux_2_17_{arch}.manylinux2014_{arch}.musllinux_1_1_{arch}"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def _compiler(self) -> Any:
        """``agent/compile.py`` as a module (the agent's folder is no package)."""
        path = Path(self.root) / "agent" / "compile.py"
        spec = importlib.util.spec_from_file_location("kiln_agent_compile", path)
        assert spec is not None and spec.loader is not None, path
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    def _arch(self) -> str:
        """``$KILN_AGENT_ARCH``, else the building machine's architecture when the agent is built
        for it, else ``none``."""
        if chosen := os.environ.get("KILN_AGENT_ARCH"):
            return chosen
        compiler = self._compiler()
        arch = str(compiler.host_arch())
        return arch if sys.platform == "linux" and arch in compiler.TARGETS else "none"
