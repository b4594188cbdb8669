"""kiln-agent on its own, as PID 1 of real hardened containers, driven through `docker run -i`.

The container gets the provider's hardening (no network, every capability dropped,
no-new-privileges, pids and memory limits) and the agent bind-mounted read-only as its
entrypoint. Every container (and the one image) a test creates is removed in teardown.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import queue
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kiln_provider.agent_protocol import (
    Credit,
    Exit,
    FrameType,
    Hello,
    Kill,
    Output,
    Refused,
    RefusedReason,
    Spawn,
    SpawnError,
    Started,
    Stdin,
    StdinAck,
    encode,
)
from tests.agent_channel import AgentChannel

pytestmark = [pytest.mark.docker, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "agent" / "build" / "kiln-agent"
PREFIX = f"kiln-agenttest-{os.getpid()}"
PATH = {"PATH": "/bin"}
MIB = 1 << 20


@pytest.fixture(scope="module")
def agent_binary() -> Path:
    subprocess.run(["make", "-s", "agent"], cwd=ROOT, check=True)
    assert AGENT.stat().st_size < MIB
    return AGENT


class Agent(AgentChannel):
    """One container running the agent (see :class:`~tests.agent_channel.AgentChannel`)."""

    def __init__(self, name: str, image: str, agent: Path, docker_args: list[str]) -> None:
        self.name = name
        self._ids = itertools.count(10_000)
        hardening = ["--network", "none", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
        limits = ["--pids-limit", "128", "--memory", "64m", "--memory-swap", "64m"]
        entry = ["-v", f"{agent}:/.kiln/agent:ro", "--entrypoint", "/.kiln/agent"]
        command = ["docker", "run", "-i", "--rm", "--name", name, *hardening, *limits, *entry, *docker_args, image]
        super().__init__(
            subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        )

    def run(self, spawn: Spawn, timeout: float = 10.0) -> tuple[bytes, bytes, Exit]:
        """Spawn and collect the command's output up to its EXIT (ERROR fails the test)."""
        self.send(spawn)
        out, err, end = self.outcome(spawn.id, timeout)
        if isinstance(end, SpawnError):
            raise AssertionError(f"spawn failed: {end}")
        return out, err, end

    def processes(self) -> list[tuple[int, str, str]]:
        """(pid, name, state) of every process in the container, seen from a command of its own.

        That command adds two: its keeper ("agent", beside PID 1) and itself ("cat").
        """
        out, _, _ = self.run(Spawn(next(self._ids), ("sh", "-c", "exec cat /proc/[0-9]*/stat"), PATH, credit=MIB))
        found = []
        for line in out.decode().splitlines():
            pid, rest = line.split(" (", 1)
            name, fields = rest.rsplit(") ", 1)
            found.append((int(pid), name, fields.split()[0]))
        return found


@pytest.fixture
def start(busybox_image: str, agent_binary: Path) -> Iterator[Callable[..., Agent]]:
    started: list[Agent] = []

    def make(*docker_args: str, image: str = busybox_image, hello: bool = True) -> Agent:
        agent = Agent(f"{PREFIX}-{len(started)}-{time.monotonic_ns()}", image, agent_binary, list(docker_args))
        started.append(agent)
        if hello:
            assert agent.next() == Hello(1, MIB, 256 * 1024)
        return agent

    yield make
    for agent in started:
        agent.close()
        subprocess.run(["docker", "rm", "-f", agent.name], capture_output=True, check=False)
        try:
            agent.process.wait(10)
        except subprocess.TimeoutExpired:
            agent.process.kill()
            agent.process.wait()
        agent.reader.join(10)  # before its descriptor is closed, and perhaps reused by the next agent's pipe
        for stream in (agent.process.stdout, agent.process.stderr):
            if stream is not None:
                stream.close()


def exists(name: str) -> bool:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"name=^/{name}$"], capture_output=True, text=True)
    return bool(out.stdout.strip())


NOBODY = ("--user", "65534:65534")


def test_echo_with_env_and_workdir(start: Callable[..., Agent]) -> None:
    agent = start(*NOBODY)
    script = 'echo "$GREETING"; pwd; echo oops >&2; exit 3'
    env = {**PATH, "GREETING": "hi"}
    agent.send(Spawn(1, ("sh", "-c", script), env, workdir="/tmp", uid=65534, gid=65534, credit=MIB))
    started, _ = agent.until(Started, 1)
    assert started.pid > 1
    out, err = bytearray(), bytearray()
    exit, before = agent.until(Exit, 1)
    for message in before:
        assert isinstance(message, Output)
        (out if message.stream == FrameType.STDOUT else err).extend(message.data)
    assert (bytes(out), bytes(err), exit) == (b"hi\n/tmp\n", b"oops\n", Exit(1, 3, None))


def test_output_arrives_while_the_command_runs(start: Callable[..., Agent]) -> None:
    agent = start(*NOBODY)
    began = time.monotonic()
    agent.send(Spawn(1, ("sh", "-c", "echo first; sleep 30; echo second"), PATH, credit=MIB))
    first, before = agent.until(Output, 1)
    assert first.data == b"first\n"
    assert time.monotonic() - began < 10
    assert not any(isinstance(m, Exit) for m in before)
    agent.send(Kill(1))
    exit, before = agent.until(Exit, 1)
    assert exit == Exit(1, None, 9)
    assert not any(isinstance(m, Output) for m in before)


def test_stdin_reaches_the_command_and_is_acknowledged(start: Callable[..., Agent]) -> None:
    agent = start(*NOBODY)
    data = os.urandom(600_000)  # more than a pipe and the agent's window: needs the ACKs
    agent.send(Spawn(1, ("sha256sum",), PATH, credit=MIB))
    sent = acked = 0
    while sent < len(data):
        while sent - acked < 200_000 and sent < len(data):
            piece = data[sent : sent + 50_000]
            agent.send(Stdin(1, piece))
            sent += len(piece)
        message = agent.next()
        if isinstance(message, StdinAck):
            acked += message.amount
    agent.send(Stdin(1, b""))
    out, before = agent.until(Output, 1)
    acked += sum(m.amount for m in before if isinstance(m, StdinAck))
    assert out.data.split()[0].decode() == hashlib.sha256(data).hexdigest()
    exit, before = agent.until(Exit, 1)
    acked += sum(m.amount for m in before if isinstance(m, StdinAck))
    assert exit.code == 0
    assert acked == len(data)


def test_eight_commands_run_at_once(start: Callable[..., Agent]) -> None:
    agent = start(*NOBODY)
    began = time.monotonic()
    agent.send(*(Spawn(i, ("sh", "-c", f"sleep 2; echo {i}"), PATH, credit=MIB) for i in range(1, 9)))
    outputs: dict[int, bytes] = {}
    exits: dict[int, Exit] = {}
    while len(exits) < 8:
        message = agent.next()
        if isinstance(message, Output):
            outputs[message.id] = message.data
        elif isinstance(message, Exit):
            exits[message.id] = message
    assert time.monotonic() - began < 6  # one after the other would take 16 s
    assert outputs == {i: f"{i}\n".encode() for i in range(1, 9)}
    assert all(e.code == 0 for e in exits.values())


def test_kill_takes_the_whole_tree_even_what_left_the_session(start: Callable[..., Agent]) -> None:
    agent = start(*NOBODY)
    escape = "sleep 100 & (setsid sh -c 'while :; do :; done' &); (sh -c 'sleep 101 &' &); sleep 102"
    agent.send(Spawn(1, ("sh", "-c", escape), PATH, credit=MIB))
    agent.until(Started, 1)
    deadline = time.monotonic() + 10
    while True:  # wait until the escapes are all there, so the kill has something to find
        names = [name for _, name, _ in agent.processes()]
        if names.count("sleep") == 3 and "sh" in names:
            break
        assert time.monotonic() < deadline, names
        time.sleep(0.1)
    agent.send(Kill(1))
    exit, _ = agent.until(Exit, 1)
    assert exit == Exit(1, None, 9)
    deadline = time.monotonic() + 5
    while True:  # the keeper may take a moment to reap the last of them and leave
        left = agent.processes()
        if sorted(name for _, name, _ in left) == ["agent", "agent", "cat"]:
            break
        assert time.monotonic() < deadline, left
        time.sleep(0.1)
    assert [state for _, _, state in left if state == "Z"] == []
    top = subprocess.run(["docker", "top", agent.name], capture_output=True, text=True, check=True).stdout
    assert "sleep" not in top
    assert "while" not in top


def test_orphans_are_reaped_and_exit_by_signal_is_reported(start: Callable[..., Agent]) -> None:
    agent = start(*NOBODY)
    _, _, exit = agent.run(Spawn(1, ("sh", "-c", "(sleep 0.2 &); kill -TERM $$"), PATH, credit=MIB))
    assert exit == Exit(1, None, 15)
    time.sleep(0.5)
    left = agent.processes()
    assert [p for p in left if p[2] == "Z"] == []
    assert sorted(name for _, name, _ in left) == ["agent", "agent", "cat"]


def test_a_missing_program_is_an_error_not_a_crash(start: Callable[..., Agent]) -> None:
    agent = start(*NOBODY)
    agent.send(Spawn(1, ("no-such-program",), PATH, credit=MIB))
    error, _ = agent.until(SpawnError, 1)
    assert error.errno == 2
    assert "No such file or directory" in error.message
    agent.send(Spawn(2, ("true",), PATH, workdir="/no/such/dir", credit=MIB))
    error, _ = agent.until(SpawnError, 2)
    assert error.message.startswith("chdir failed")
    assert agent.run(Spawn(3, ("echo", "still here"), PATH, credit=MIB))[0] == b"still here\n"


def test_commands_run_as_the_uid_spawn_asks(start: Callable[..., Agent]) -> None:
    as_nobody = start(*NOBODY)
    out, _, _ = as_nobody.run(Spawn(1, ("sh", "-c", "id -u; id -g"), PATH, uid=65534, gid=65534, credit=MIB))
    assert out == b"65534\n65534\n"
    # A root container without capabilities cannot switch: a clear error.
    as_root = start()
    as_root.send(Spawn(1, ("id", "-u"), PATH, uid=65534, gid=65534, credit=MIB))
    error, _ = as_root.until(SpawnError, 1)
    assert "Operation not permitted" in error.message
    # Given SETUID and SETGID, the agent switches, and no command keeps a capability.
    switching = start("--cap-add", "SETUID", "--cap-add", "SETGID")
    out, _, _ = switching.run(Spawn(1, ("id", "-u"), PATH, uid=65534, gid=65534, credit=MIB))
    assert out == b"65534\n"
    out, _, _ = switching.run(Spawn(2, ("grep", "^Cap[EPI]", "/proc/self/status"), PATH, uid=0, gid=0, credit=MIB))
    assert out.split() == [b"CapInh:", b"0" * 16, b"CapPrm:", b"0" * 16, b"CapEff:", b"0" * 16]


def test_an_image_with_a_single_static_binary_runs(start: Callable[..., Agent], shell_less_image: str) -> None:
    agent = start(*NOBODY, image=shell_less_image)
    out, _, exit = agent.run(Spawn(1, ("/busybox", "echo", "alone"), {}, credit=MIB))
    assert (out, exit) == (b"alone\n", Exit(1, 0, None))
    out, _, _ = agent.run(Spawn(2, ("/busybox", "ls", "/"), {}, credit=MIB))
    assert b"bin" not in out.split()


def test_closing_the_channel_stops_the_container(start: Callable[..., Agent]) -> None:
    agent = start(*NOBODY)
    agent.send(Spawn(1, ("sleep", "100"), PATH, credit=MIB))
    agent.until(Started, 1)
    began = time.monotonic()
    agent.close()
    assert agent.process.wait(10) == 0
    while exists(agent.name):
        assert time.monotonic() - began < 10
        time.sleep(0.1)


def test_a_provider_killed_outright_leaves_no_container(start: Callable[..., Agent]) -> None:
    agent = start(*NOBODY)
    agent.send(Spawn(1, ("sh", "-c", "sleep 100 & sleep 100"), PATH, credit=MIB))
    agent.until(Started, 1)
    began = time.monotonic()
    agent.process.kill()  # the attach connection breaks without an orderly close
    agent.process.wait()
    while exists(agent.name):
        assert time.monotonic() - began < 10, "the container outlived the end of its channel"
        time.sleep(0.1)


def test_output_without_credit_waits_in_the_command(start: Callable[..., Agent]) -> None:
    agent = start(*NOBODY)
    agent.send(Spawn(1, ("yes", "0123456789abcdef"), PATH, credit=100_000))
    agent.until(Started, 1)
    got = 0
    while got < 100_000:
        message = agent.next()
        assert isinstance(message, Output)
        got += len(message.data)
    assert got == 100_000
    with pytest.raises(queue.Empty):
        agent.next(timeout=1.0)  # out of credit: nothing more, however fast `yes` could write
    agent.send(Credit(1, 5))
    message = agent.next()
    assert isinstance(message, Output)
    assert len(message.data) <= 5
    # The agent holds nothing for it: its memory stays that of an idle agent.
    status = agent.run(Spawn(2, ("grep", "VmRSS", "/proc/1/status"), PATH, uid=65534, gid=65534, credit=MIB))[0]
    assert int(status.split()[1]) < 4096  # KiB
    agent.send(Kill(1))
    exit, _ = agent.until(Exit, 1)
    assert exit.signal == 9


def refusal(agent: Agent) -> RefusedReason:
    message = agent.next()
    assert isinstance(message, Refused), message
    return message.reason


def test_garbage_from_the_provider_is_refused_and_the_agent_goes_on(start: Callable[..., Agent]) -> None:
    agent = start(*NOBODY)

    def frame(kind: int, id: int, payload: bytes, length: int | None = None) -> bytes:
        size = 5 + len(payload) if length is None else length
        return size.to_bytes(4, "big") + bytes([kind]) + id.to_bytes(4, "big") + payload

    cases = [
        (frame(0x42, 1, b"?"), RefusedReason.BAD_TYPE),
        (frame(0x83, 1, b"output from the provider?"), RefusedReason.BAD_TYPE),
        (frame(0x01, 1, b"\0\0\0\0"), RefusedReason.BAD_PAYLOAD),
        (frame(0x01, 1, bytes.fromhex("00000000 00000000 00000000 00000000 ffffffff")), RefusedReason.BAD_PAYLOAD),
        (frame(0x01, 0, encode(Spawn(1, ("true",)))[9:]), RefusedReason.BAD_PAYLOAD),
        (frame(0x02, 77, b"stdin for nobody"), RefusedReason.UNKNOWN_ID),
        (frame(0x04, 77, b"\0\0\0\1"), RefusedReason.UNKNOWN_ID),
        ((2).to_bytes(4, "big") + b"xy", RefusedReason.BAD_PAYLOAD),
    ]
    for data, reason in cases:
        agent.send_raw(data)
        assert refusal(agent) == reason, data
    agent.send(Spawn(5, ("sleep", "100"), PATH, credit=MIB))
    agent.until(Started, 5)
    agent.send(Spawn(5, ("true",), PATH))
    assert refusal(agent) == RefusedReason.ID_IN_USE
    agent.send_raw(frame(0x03, 5, b"x"))
    assert refusal(agent) == RefusedReason.BAD_PAYLOAD
    agent.send_raw(frame(0x04, 5, b"xx"))
    assert refusal(agent) == RefusedReason.BAD_PAYLOAD
    # `sleep` never reads: a pipe's worth goes in, 256 KiB wait in the window, the rest is refused.
    agent.send(*(Stdin(5, b"x" * 65536) for _ in range(6)), Stdin(5, b""), Stdin(5, b"after EOF"))
    reasons: list[RefusedReason] = []
    while len(reasons) < 2:
        message = agent.next()
        if isinstance(message, Refused):
            reasons.append(message.reason)
        else:
            assert isinstance(message, StdinAck)
    assert reasons == [RefusedReason.STDIN_OVERRUN, RefusedReason.STDIN_CLOSED]
    assert agent.run(Spawn(6, ("echo", "fine"), PATH, credit=MIB))[0] == b"fine\n"
    # A length beyond the bound loses the framing: the agent says so and stops, cleanly.
    agent.send_raw(frame(0x02, 5, b"", length=(1 << 20) + 1))
    refused, _ = agent.until(Refused)
    assert refused.reason == RefusedReason.TOO_LONG
    assert agent.process.wait(10) == 3
    assert agent.process.stderr is not None
    assert b"refused; stopping" in agent.process.stderr.read()
