"""Commands in real task containers, through the provider's end of their agent's channel.

The containers are the adapter's own (hardened, the agent as PID 1, attached before start);
every one is removed in teardown. The agent by itself is tests/docker/test_agent.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import pytest

from kiln_provider import agent_protocol as wire
from kiln_provider.agent import AgentChannel, Outcome
from kiln_provider.docker_adapter import ContainerSpec, DockerAdapter, Started
from kiln_provider.errors import DockerFailed

pytestmark = [pytest.mark.docker, pytest.mark.timeout(60)]

MIB = 1024 * 1024
PROVIDER = f"test-agent-{os.getpid()}"
PATH = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

Open = Callable[..., Awaitable[tuple[Started, AgentChannel]]]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> DockerAdapter:
    return DockerAdapter(PROVIDER, volumes=tmp_path_factory.mktemp("volumes"))


@pytest.fixture
async def open_box(adapter: DockerAdapter, busybox_image: str) -> AsyncIterator[Open]:
    opened: list[tuple[Started, AgentChannel]] = []

    async def open_(image: str = busybox_image) -> tuple[Started, AgentChannel]:
        spec = ContainerSpec(activity=uuid.uuid4().hex[:12], image=image, cpus=1.0, memory=256 * MIB, storage=64 * MIB)
        started = await asyncio.to_thread(adapter.create, spec)
        channel = AgentChannel(started.channel, started.id[:12], started.uid, started.gid)
        opened.append((started, channel))
        await channel.open()
        return started, channel

    yield open_
    for started, channel in opened:
        await channel.close()
        await asyncio.to_thread(adapter.remove, started.id)


async def run(
    channel: AgentChannel,
    *argv: str,
    timeout: float = 10,
    env: Mapping[str, str] | None = None,
    workdir: str | None = None,
    max_output: int = MIB,
) -> Outcome:
    return await channel.run(list(argv), {**PATH, **(env or {})}, workdir, timeout, max_output)


@contextlib.asynccontextmanager
async def stand_in(tmp_path: Path, image: str, script: str) -> AsyncIterator[AgentChannel]:
    """A container whose "agent" is this shell ``script`` (a liar): its channel, not yet opened."""
    liar = tmp_path / f"liar-{uuid.uuid4().hex[:6]}"
    liar.write_text(f"#!/bin/sh\n{script}\n")
    liar.chmod(0o755)
    adapter = DockerAdapter(PROVIDER, agent=str(liar), volumes=tmp_path / "volumes")
    spec = ContainerSpec(activity=uuid.uuid4().hex[:12], image=image, cpus=1.0, memory=64 * MIB, storage=16 * MIB)
    started = await asyncio.to_thread(adapter.create, spec)
    try:
        yield AgentChannel(started.channel, liar.name, started.uid, started.gid)
    finally:
        await asyncio.to_thread(adapter.remove, started.id)


def processes(container_id: str) -> str:
    """What runs in the container, as ``docker top`` sees it from outside."""
    done = subprocess.run(["docker", "top", container_id, "-o", "pid,args"], capture_output=True, timeout=10)
    return done.stdout.decode()


async def test_exit_codes_env_workdir_and_the_two_streams(open_box: Open) -> None:
    _, agent = await open_box()
    assert (await run(agent, "true")).exit_code == 0
    assert (await run(agent, "sh", "-c", "exit 3")).exit_code == 3
    outcome = await run(
        agent, "sh", "-c", 'echo "$GREETING"; pwd; echo err >&2', env={"GREETING": "hi"}, workdir="/tmp"
    )
    assert (outcome.stdout, outcome.stderr) == (b"hi\n/tmp\n", b"err\n")
    assert (await run(agent, "pwd")).stdout == b"/golem/work\n", "the image's WORKDIR"
    assert not (outcome.timed_out or outcome.killed or outcome.stdout_truncated) and outcome.duration > 0


async def test_output_past_the_cap_is_read_and_dropped(open_box: Open) -> None:
    _, agent = await open_box()
    outcome = await run(agent, "sh", "-c", "head -c 5000000 /dev/zero; echo small >&2", max_output=1000)
    assert outcome.exit_code == 0
    assert (outcome.stdout, outcome.stdout_truncated) == (bytes(1000), True)
    assert (outcome.stderr, outcome.stderr_truncated) == (b"small\n", False)


async def test_a_missing_program_is_an_outcome(open_box: Open) -> None:
    _, agent = await open_box()
    outcome = await run(agent, "no-such-program")
    assert outcome.exit_code == 127 and b"no-such-program" in outcome.stderr and outcome.stdout == b""


async def test_a_timeout_kills_the_whole_tree_even_what_left_its_session(open_box: Open) -> None:
    started, agent = await open_box()
    began = time.monotonic()
    script = "echo begun; sleep 101 & (setsid sh -c 'while :; do :; done' &); sleep 102"
    outcome = await run(agent, "sh", "-c", script, timeout=1)
    assert time.monotonic() - began < 3
    assert outcome.timed_out and not outcome.killed and outcome.exit_code == 137
    assert outcome.stdout == b"begun\n"
    left = processes(started.id)
    assert "sleep 10" not in left and "while" not in left, left


async def test_a_cancelled_command_is_killed(open_box: Open) -> None:
    started, agent = await open_box()
    task = asyncio.create_task(run(agent, "sh", "-c", "sleep 103 & sleep 104"))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):
        if "sleep 10" not in processes(started.id):
            break
        await asyncio.sleep(0.1)
    assert "sleep 10" not in processes(started.id)
    assert (await run(agent, "echo", "still")).stdout == b"still\n"


async def test_eight_commands_at_once_in_one_container(open_box: Open) -> None:
    _, agent = await open_box()
    began = time.monotonic()
    outcomes = await asyncio.gather(*(run(agent, "sh", "-c", f"sleep 1; echo {i}") for i in range(8)))
    assert [o.stdout for o in outcomes] == [f"{i}\n".encode() for i in range(8)]
    assert time.monotonic() - began < 4, "they ran side by side"


async def test_an_image_without_a_shell_runs(open_box: Open, shell_less_image: str) -> None:
    _, agent = await open_box(shell_less_image)
    assert (await run(agent, "/busybox", "echo", "alone")).stdout == b"alone\n"


async def test_garbage_on_the_channel_fails_that_container_only(
    open_box: Open, busybox_image: str, tmp_path: Path
) -> None:
    # A command cannot reach the agent's channel (PID 1 is not dumpable: /proc/1/fd is closed
    # to it), so the garbage comes from a stand-in for the agent itself.
    async with stand_in(tmp_path, busybox_image, "printf 'garbage, not frames'\nsleep 30") as channel:
        with pytest.raises(DockerFailed, match="broke its agent's protocol"):
            await channel.open()
        with pytest.raises(DockerFailed):
            await run(channel, "true")
    _, good = await open_box()
    assert (await run(good, "echo", "fine")).stdout == b"fine\n"
    _, other = await open_box()
    outcome = await run(other, "sh", "-c", "echo junk > /proc/1/fd/1")
    assert outcome.exit_code != 0, "a command cannot write into the agent's channel"
    assert (await run(other, "echo", "unharmed")).stdout == b"unharmed\n"


async def test_closing_the_channel_removes_the_container(adapter: DockerAdapter, open_box: Open) -> None:
    started, agent = await open_box()
    await agent.close()
    for _ in range(100):
        inspected = await asyncio.to_thread(subprocess.run, ["docker", "inspect", started.id], capture_output=True)
        gone = inspected.returncode != 0
        if gone:
            break
        await asyncio.sleep(0.1)
    assert gone, "the agent exits when its channel closes, and Docker removes the container"


async def test_commands_run_as_nobody_unless_the_image_names_a_user(open_box: Open, busybox_image: str) -> None:
    started, agent = await open_box()
    assert (started.uid, started.gid) == (65534, 65534)
    outcome = await run(agent, "sh", "-c", "id -u; id -g; touch /golem/output/mine && stat -c %u /golem/output/mine")
    assert outcome.stdout == b"65534\n65534\n65534\n", outcome
    assert (await run(agent, "touch", "/etc/nope")).exit_code != 0, "nobody cannot write the image's files"
    tag = f"kiln-user-{os.getpid()}:latest"
    dockerfile = f"FROM {busybox_image}\nUSER 1234:2345\n".encode()
    await asyncio.to_thread(
        subprocess.run, ["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, capture_output=True, check=True
    )
    try:
        _, own = await open_box(tag)
        assert (await run(own, "sh", "-c", "id -u; id -g")).stdout == b"1234\n2345\n"
    finally:
        await asyncio.to_thread(subprocess.run, ["docker", "rmi", "-f", tag], capture_output=True)


async def test_output_beyond_its_credit_breaks_the_channel(busybox_image: str, tmp_path: Path) -> None:
    # A stand-in agent says hello, then floods a streamed command whose output nobody takes
    # with more than it was granted (1 MiB): the provider holds no more than it granted, and
    # fails that container.
    hello = r"\000\000\000\021\201\000\000\000\000\000\000\000\001\000\020\000\000\000\004\000\000"
    chunk = r"\000\000\200\005\203\000\000\000\001"  # STDOUT of command 1, 32 KiB
    flood = (
        f"printf '{hello}'\nsleep 1\nfor i in $(seq 40); do printf '{chunk}'; head -c 32768 /dev/zero; done\nsleep 30"
    )
    async with stand_in(tmp_path, busybox_image, flood) as channel:
        await channel.open()

        async def stuck(fd: int, data: bytes) -> None:
            await asyncio.Event().wait()  # a requestor that never reads: no credit goes back

        with pytest.raises(DockerFailed, match="beyond the credit"):
            await channel.run(["true"], PATH, None, 10, MIB, sink=stuck)


def printf(*messages: wire.Message) -> str:
    """A shell line that writes ``messages`` as the agent would (a stand-in agent's words)."""
    return "printf '" + "".join(f"\\{byte:03o}" for message in messages for byte in wire.encode(message)) + "'"


async def test_a_frame_that_crossed_its_commands_exit_is_no_warning(
    busybox_image: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The agent forgets a command once it has exited: a credit or stdin frame the provider
    # sent meanwhile is refused as for no such command. Expected, so not a warning; a refusal
    # about a command the provider never ran still is one.
    unknown = wire.RefusedReason.UNKNOWN_ID
    script = "\n".join(
        [
            printf(wire.Hello(wire.VERSION, wire.AGENT_MAX_LENGTH, 65536)),
            "sleep 1",  # the spawn of command 1 is on its way
            printf(wire.Started(1, 7), wire.Exit(1, 0, None)),
            "sleep 1",
            printf(wire.Refused(1, unknown, "no such command"), wire.Refused(9, unknown, "no such command")),
            "sleep 30",
        ]
    )
    async with stand_in(tmp_path, busybox_image, script) as channel:
        await channel.open()
        with caplog.at_level(logging.DEBUG, logger="kiln.provider.agent"):
            assert (await run(channel, "true")).exit_code == 0
            deadline = time.monotonic() + 10
            while len([r for r in caplog.records if "refused a frame" in r.getMessage()]) < 2:
                assert time.monotonic() < deadline, caplog.text
                await asyncio.sleep(0.05)
        await channel.close()
    levels = [r.levelno for r in caplog.records if "refused a frame" in r.getMessage()]
    assert levels == [logging.DEBUG, logging.WARNING], caplog.text


async def test_the_agents_debug_switch_is_the_providers(
    open_box: Open, busybox_image: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # KILN_AGENT_DEBUG=1 in the provider's environment reaches its agents, whose frame lines
    # the provider logs at DEBUG; commands (which start from the container's env) do not see it.
    def lines_of(name: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"agent of {name}: ")]

    monkeypatch.setenv("KILN_AGENT_DEBUG", "1")
    with caplog.at_level(logging.DEBUG, logger="kiln.provider.agent"):
        started, agent = await open_box()
        assert "KILN_AGENT_DEBUG" not in started.env
        assert b"KILN_AGENT_DEBUG" not in (await run(agent, "env", env=started.env)).stdout
        name = started.id[:12]
        deadline = time.monotonic() + 10
        while not any(" sent EXIT id=1 " in line for line in lines_of(name)):  # stderr is not ordered with stdout
            assert time.monotonic() < deadline, caplog.text
            await asyncio.sleep(0.05)
        log = lines_of(name)
        assert f"agent of {name}: kiln-agent: sent HELLO id=0 length=17 1 1048576 262144" in log
        assert any(line.startswith(f"agent of {name}: kiln-agent: read SPAWN id=1 ") for line in log), log
        # Off in the provider, it stays off even for an image whose ENV sets it; its commands see the image's value.
        monkeypatch.delenv("KILN_AGENT_DEBUG")
        tag = f"kiln-agent-debug-{os.getpid()}:latest"
        dockerfile = f"FROM {busybox_image}\nENV KILN_AGENT_DEBUG=1\n".encode()
        build = ["docker", "build", "-q", "-t", tag, "-"]
        await asyncio.to_thread(subprocess.run, build, input=dockerfile, capture_output=True, check=True)
        try:
            started, quiet = await open_box(tag)
            assert started.env["KILN_AGENT_DEBUG"] == "1"
            assert (await run(quiet, "sh", "-c", "echo $KILN_AGENT_DEBUG", env=started.env)).stdout == b"1\n"
            assert lines_of(started.id[:12]) == []
        finally:
            await asyncio.to_thread(subprocess.run, ["docker", "rmi", "-f", tag], capture_output=True)
