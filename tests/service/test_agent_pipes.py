"""kiln-agent driven directly through pipes, without Docker, as tini's and dumb-init's tests do.

Each test starts the built binary (``agent/build/kiln-agent``, built here by ``agent/compile.py``
when missing or older than its source) as a child process with its stdin and stdout as
pipes, speaks the frames of ``agent/PROTOCOL.md`` with :mod:`kiln_provider.agent_protocol`,
and checks what that document promises: exec, exit codes and signals, the two output
streams, input and its window, credit, kills of whole trees, refusals of malformed and
oversized frames, the end of the channel, and the ``KILN_AGENT_DEBUG`` log on stderr.

Outside a container the agent is not PID 1, so at its end it has each keeper kill its tree
and waits for them: once the agent's process has exited, nothing its commands started may be
left, and the tests check exactly that (by pid, and by a token in the argv of what they start).
Commands run as this process's uid and gid, so the tests need no privilege; the one about
switching users checks the switch as root and its refusal otherwise.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from kiln_provider.agent_protocol import (
    PROVIDER_MAX_LENGTH,
    Credit,
    Exit,
    FrameType,
    Hello,
    Kill,
    Message,
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

pytestmark = [pytest.mark.agent, pytest.mark.timeout(30)]

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "agent" / "kiln-agent.c").is_file())
AGENT = ROOT / "agent" / "build" / "kiln-agent"
SOURCES = (ROOT / "agent" / "kiln-agent.c", ROOT / "agent" / "compile.py")
PATH = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
MIB = 1 << 20
WINDOW = 256 * 1024
QUIET = 0.3
"""How long a test waits to see that nothing comes (the agent holds output without credit)."""


@pytest.fixture(scope="module")
def agent_binary() -> Path:
    """The agent as ``make agent`` builds it: built now if missing or older than its source."""
    if AGENT.is_file() and AGENT.stat().st_mtime >= max(s.stat().st_mtime for s in SOURCES):
        return AGENT
    if importlib.util.find_spec("ziglang") is None:
        pytest.skip(
            f"{AGENT.relative_to(ROOT)} is missing or older than its source, and Zig's cc (pip package "
            "ziglang) is not installed to build it: run `make agent`"
        )
    command = [sys.executable, str(ROOT / "agent" / "compile.py"), "-o", str(AGENT)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"building the agent failed:\n{done.stderr}"
    return AGENT


class Agent(AgentChannel):
    """The agent as a child process (see :class:`~tests.agent_channel.AgentChannel`); its
    stderr is collected by a thread of its own, so it never blocks on it."""

    def __init__(self, binary: Path, env: Mapping[str, str], cwd: Path, stderr_is_stdout: bool) -> None:
        super().__init__(
            subprocess.Popen(
                [str(binary)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if stderr_is_stdout else subprocess.PIPE,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        )
        self._stderr = bytearray()
        self._threads = [self.reader]
        if not stderr_is_stdout:
            self._threads.append(threading.Thread(target=self._read_stderr, daemon=True))
            self._threads[-1].start()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        while data := os.read(self.process.stderr.fileno(), 65536):
            self._stderr += data

    def nothing_comes(self) -> None:
        """Nothing arrives for a while (a negative can only be seen by waiting)."""
        try:
            message = self.messages.get(timeout=QUIET)
        except queue.Empty:
            return
        raise AssertionError(f"nothing was to come, but {message} did")

    def run(self, spawn: Spawn) -> tuple[bytes, bytes, Exit | SpawnError]:
        """Spawn and collect the command's output up to its end."""
        self.send(spawn)
        return self.outcome(spawn.id)

    def lines(self, spawn: Spawn, count: int) -> list[bytes]:
        """Spawn and read the first ``count`` lines of the command's stdout."""
        self.send(spawn)
        out = bytearray()
        while out.count(b"\n") < count:
            message = self.next()
            assert not isinstance(message, Exit | SpawnError), (message, bytes(out))
            if isinstance(message, Output) and message.id == spawn.id:
                out += message.data
        return bytes(out).splitlines()[:count]

    def end(self, timeout: float = 10.0) -> int:
        """Wait for the agent to exit, and for its streams to end; its exit status."""
        status = self.process.wait(timeout)
        for thread in self._threads:
            thread.join(timeout)
            assert not thread.is_alive(), "the agent exited, but its output did not end"
        return status

    @property
    def stderr(self) -> str:
        """What the agent wrote on stderr so far (all of it once :meth:`end` returned)."""
        return self._stderr.decode(errors="replace")


Start = Callable[..., Agent]


@pytest.fixture
def start(agent_binary: Path, tmp_path: Path) -> Iterator[Start]:
    """Starts agents (checking their HELLO); each is closed, and killed if it lingers, at teardown."""
    started: list[Agent] = []

    def make(env: Mapping[str, str] | None = None, *, stderr_is_stdout: bool = False, hello: bool = True) -> Agent:
        agent = Agent(agent_binary, env or {}, tmp_path, stderr_is_stdout)
        started.append(agent)
        if hello:
            assert agent.next() == Hello(1, PROVIDER_MAX_LENGTH, WINDOW)
        return agent

    yield make
    for agent in started:
        agent.close()
        try:
            agent.end()
        except subprocess.TimeoutExpired:
            agent.process.kill()
            agent.end()
        # Only now that its readers have seen EOF: a descriptor closed under a reader could be
        # reused by the next agent's pipe, and the old reader would take the new agent's frames.
        for stream in (agent.process.stdout, agent.process.stderr):
            if stream is not None:
                stream.close()


def spawn(id: int, *argv: str, env: Mapping[str, str] = PATH, credit: int = MIB, **kw: int | str) -> Spawn:
    """A SPAWN run as this process's user (so no privilege is needed to switch)."""
    ids: dict[str, int | str] = {"uid": os.getuid(), "gid": os.getgid()}
    return Spawn(id, argv, env, credit=credit, **{**ids, **kw})  # type: ignore[arg-type]


@pytest.fixture
def token() -> str:
    """A number no other process has in its argv: commands that must not survive sleep for
    ``1000.<token>`` seconds, so :func:`survivors` finds them."""
    return f"{secrets.randbelow(10**9):09d}"


def survivors(token: str) -> list[int]:
    """Processes (zombies too) whose argv holds ``token``. For the end of a test only: a process
    in the middle of an exec shows an empty argv for a moment (so while commands start, the
    tests follow them by pid: :func:`alive`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue  # it ended while we looked
    return found


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie too: nobody reaped it yet)."""
    return Path(f"/proc/{pid}").exists()


def session_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[3])  # after the name: state, ppid, pgrp, session


def escapes(id: int, token: str) -> Spawn:
    """A command leaving three processes behind, each printing its pid once the token is in its
    argv: one in the background, one in a session of its own (setsid), one double-forked (its
    parent gone). The command itself holds only ``$T``, not the token."""
    child = 'sh -c \'echo $$; exec sleep "1000.$T"\' "sh-$T"'
    script = f"{child} & setsid {child} & ({child} &); wait"
    return spawn(id, "sh", "-c", script, env={**PATH, "T": token})


# --- commands: exec, exit statuses, the two streams ------------------------------------------------


def test_hello_comes_first_with_the_limits(start: Start) -> None:
    agent = start(hello=False)
    assert agent.next() == Hello(version=1, max_length=1 << 20, stdin_window=256 * 1024, id=0)


def test_exit_codes_signals_and_the_two_streams(start: Start) -> None:
    agent = start()
    out, err, end = agent.run(spawn(1, "sh", "-c", "echo out; echo err >&2; echo more; exit 3"))
    assert (out, err, end) == (b"out\nmore\n", b"err\n", Exit(1, 3, None))
    assert agent.run(spawn(2, "true"))[2] == Exit(2, 0, None)
    assert agent.run(spawn(3, "sh", "-c", "kill -TERM $$"))[2] == Exit(3, None, 15)
    assert agent.run(spawn(4, "sh", "-c", "kill -KILL $$"))[2] == Exit(4, None, 9)


def test_started_comes_first_with_the_commands_pid(start: Start) -> None:
    agent = start()
    agent.send(spawn(1, "sh", "-c", "echo $$; read line"))
    started = agent.next()
    assert isinstance(started, Started) and started.id == 1, started
    out, _ = agent.until(Output, 1)
    assert out.data == f"{started.pid}\n".encode()
    assert session_of(started.pid) == started.pid, "the command leads a session of its own"
    agent.send(Stdin(1, b""))
    assert agent.until(Exit, 1)[0] == Exit(1, 1, None)  # read found no line


def test_the_environment_is_exactly_the_one_given_and_workdir_applies(start: Start, tmp_path: Path) -> None:
    agent = start({"AGENTS_OWN": "not for commands"})
    env = {**PATH, "GREETING": "hello world", "EMPTY": "", "EQUALS": "a=b"}
    out, _, end = agent.run(spawn(1, "env", env=env))
    assert end == Exit(1, 0, None)
    assert sorted(out.decode().splitlines()) == sorted(f"{k}={v}" for k, v in env.items())
    (tmp_path / "here").mkdir()
    assert agent.run(spawn(2, "pwd", workdir=str(tmp_path / "here")))[0] == f"{tmp_path / 'here'}\n".encode()
    assert agent.run(spawn(3, "pwd"))[0] == f"{tmp_path}\n".encode(), "empty: the agent's own folder"


def test_what_cannot_start_is_an_error_and_the_agent_goes_on(start: Start, tmp_path: Path) -> None:
    agent = start()
    (tmp_path / "not-executable").write_text("#!/bin/sh\n")
    cases = [
        (spawn(1, "no-such-program"), 2, "exec failed: No such file or directory"),
        (spawn(2, str(tmp_path / "not-executable")), 13, "exec failed: Permission denied"),
        (spawn(3, "true", workdir="/no/such/folder"), 2, "chdir failed: No such file or directory"),
    ]
    for message, errno, text in cases:
        assert agent.run(message) == (b"", b"", SpawnError(message.id, errno, text))
    assert agent.run(spawn(4, "echo", "still here"))[0] == b"still here\n"


def test_commands_run_as_the_user_spawn_names_with_no_capability(start: Start) -> None:
    agent = start()
    if os.getuid() != 0:
        out, _, end = agent.run(spawn(1, "true", uid=0, gid=0))
        assert isinstance(end, SpawnError) and end.errno == 1, end
        return
    out, _, _ = agent.run(spawn(1, "sh", "-c", "id -u; id -g; id -G", uid=65534, gid=65534))
    assert out == b"65534\n65534\n65534\n"
    out, _, _ = agent.run(spawn(2, "grep", "^Cap[EPIA]", "/proc/self/status", uid=0, gid=0))
    assert out.split() == [b"CapInh:", b"0" * 16, b"CapPrm:", b"0" * 16, b"CapEff:", b"0" * 16, b"CapAmb:", b"0" * 16]


def test_output_streams_while_the_command_runs(start: Start) -> None:
    agent = start()
    agent.send(spawn(1, "sh", "-c", 'echo first; read line; echo "second $line"'))
    first, before = agent.until(Output, 1)
    assert first.data == b"first\n" and not any(isinstance(m, Exit) for m in before)
    agent.send(Stdin(1, b"go\n"), Stdin(1, b""))
    second, _ = agent.until(Output, 1)
    assert second.data == b"second go\n"
    assert agent.until(Exit, 1)[0] == Exit(1, 0, None)


def test_commands_run_side_by_side(start: Start) -> None:
    agent = start()
    agent.send(*(spawn(i, "sh", "-c", 'read line; echo "$line"') for i in range(1, 9)))
    started: set[int] = set()
    while len(started) < 8:  # all eight run at once: each waits for input none has had
        started.add(agent.until(Started)[0].id)
    assert started == set(range(1, 9))
    for i in range(8, 0, -1):
        agent.send(Stdin(i, f"{i}\n".encode()), Stdin(i, b""))
    outputs: dict[int, bytes] = {}
    ends: dict[int, Message] = {}
    while len(ends) < 8:
        message = agent.next()
        if isinstance(message, Output):
            outputs[message.id] = message.data
        elif isinstance(message, Exit):
            ends[message.id] = message
    assert outputs == {i: f"{i}\n".encode() for i in range(1, 9)}
    assert ends == {i: Exit(i, 0, None) for i in range(1, 9)}


# --- input: the window and its acknowledgements ----------------------------------------------------


def test_stdin_reaches_the_command_within_the_window(start: Start) -> None:
    agent = start()
    data = os.urandom(3 * WINDOW)  # more than a pipe and the window: it needs the acknowledgements
    agent.send(spawn(1, "sha256sum"))
    sent = acked = 0
    while sent < len(data):
        while sent - acked < WINDOW and sent < len(data):
            piece = data[sent : sent + min(60_000, WINDOW - (sent - acked))]
            agent.send(Stdin(1, piece))
            sent += len(piece)
        message = agent.next()
        assert not isinstance(message, Refused), message
        if isinstance(message, StdinAck):
            acked += message.amount
    agent.send(Stdin(1, b""))
    out, before = agent.until(Output, 1)
    exit, after = agent.until(Exit, 1)
    acked += sum(m.amount for m in before + after if isinstance(m, StdinAck))
    assert out.data.split()[0].decode() == hashlib.sha256(data).hexdigest()
    assert (exit, acked) == (Exit(1, 0, None), len(data))


def test_stdin_a_command_closed_is_acknowledged_and_dropped(start: Start) -> None:
    agent = start()
    agent.send(spawn(1, "sh", "-c", "exec 0<&-; echo closed; exec sleep 100"))
    assert agent.until(Output, 1)[0].data == b"closed\n"
    agent.send(*(Stdin(1, bytes(65536)) for _ in range(3)))
    acked = 0
    while acked < 3 * 65536:
        acked += agent.until(StdinAck, 1)[0].amount
    assert acked == 3 * 65536
    agent.send(Kill(1))
    assert agent.until(Exit, 1)[0] == Exit(1, None, 9)


def test_stdin_past_the_window_or_after_its_end_is_refused(start: Start) -> None:
    agent = start()
    agent.send(spawn(1, "sleep", "100"))  # never reads: a pipe's worth goes in, the window fills
    agent.until(Started, 1)
    piece = 65536
    agent.send(*(Stdin(1, bytes(piece)) for _ in range(8)), Stdin(1, b""), Stdin(1, b"after the end"))
    reasons: list[RefusedReason] = []
    acked = 0
    while RefusedReason.STDIN_CLOSED not in reasons:
        message = agent.next()
        if isinstance(message, Refused):
            assert message.id == 1
            reasons.append(message.reason)
        else:
            assert isinstance(message, StdinAck), message
            acked += message.amount
    overruns = len(reasons) - 1
    assert overruns >= 1 and reasons == [RefusedReason.STDIN_OVERRUN] * overruns + [RefusedReason.STDIN_CLOSED]
    assert 8 * piece - overruns * piece - acked <= WINDOW, "the agent holds no more than the window"
    agent.send(Kill(1))
    assert agent.until(Exit, 1)[0] == Exit(1, None, 9)


# --- output: credit ------------------------------------------------------------------------------


def test_output_waits_for_credit_and_exit_waits_for_the_output(start: Start) -> None:
    agent = start()
    agent.send(spawn(1, "head", "-c", "100000", "/dev/zero", credit=60_000))
    agent.until(Started, 1)
    got = 0
    while got < 60_000:
        message = agent.next()
        assert isinstance(message, Output), message
        assert len(message.data) <= 32768
        got += len(message.data)
    assert got == 60_000
    agent.nothing_comes()  # head has ended, but its last 40,000 bytes wait for credit, and EXIT after them
    agent.send(Credit(1, 40_000))
    while got < 100_000:
        message = agent.next()
        assert isinstance(message, Output), message
        got += len(message.data)
    assert (got, agent.next()) == (100_000, Exit(1, 0, None))


def test_no_credit_no_output(start: Start) -> None:
    agent = start()
    agent.send(spawn(1, "echo", "hello", credit=0))
    agent.until(Started, 1)
    agent.nothing_comes()
    agent.send(Credit(1, 3))
    assert agent.next() == Output(1, FrameType.STDOUT, b"hel")
    agent.send(Credit(1, 100))
    assert agent.next() == Output(1, FrameType.STDOUT, b"lo\n")
    assert agent.next() == Exit(1, 0, None)


def test_output_comes_in_chunks_of_at_most_32_kib(start: Start, tmp_path: Path) -> None:
    agent = start()
    written = tmp_path / "written"
    agent.send(spawn(1, "sh", "-c", f'head -c 40000 /dev/zero; touch "{written}"; read line', credit=0))
    agent.until(Started, 1)
    while not written.exists():  # without credit, all of it waits in the pipe
        time.sleep(0.005)
    agent.send(Credit(1, MIB))
    assert agent.next() == Output(1, FrameType.STDOUT, bytes(32768))
    assert agent.next() == Output(1, FrameType.STDOUT, bytes(40000 - 32768))
    agent.send(Stdin(1, b""))
    assert agent.until(Exit, 1)[0] == Exit(1, 1, None)  # read found no line


# --- kills ---------------------------------------------------------------------------------------


def test_kill_takes_the_whole_tree_even_what_left_the_session(start: Start, token: str) -> None:
    agent = start()
    pids = [int(line) for line in agent.lines(escapes(1, token), 3)]
    assert all(alive(pid) for pid in pids)
    assert len({session_of(pid) for pid in pids}) == 2, "one escaped into a session of its own"
    agent.send(Kill(1))
    assert agent.until(Exit, 1)[0] == Exit(1, None, 9)
    wait_until_forgotten(agent, 1)  # its keeper has killed and reaped the whole tree, and left
    assert not any(alive(pid) for pid in pids)
    assert survivors(token) == []


def test_kill_after_exit_reaches_what_the_command_left_running(start: Start, token: str) -> None:
    agent = start()
    out, _, end = agent.run(spawn(1, "sh", "-c", f"sleep 1000.{token} & echo $!"))
    assert end == Exit(1, 0, None), "EXIT does not wait for what the command left running"
    pid = int(out)
    assert alive(pid)
    agent.send(spawn(1, "true"))
    refused, _ = agent.until(Refused, 1)
    assert refused.reason == RefusedReason.ID_IN_USE, "its keeper is still there"
    agent.send(Kill(1))
    wait_until_forgotten(agent, 1)
    assert survivors(token) == []


def wait_until_forgotten(agent: Agent, id: int) -> None:
    """Until the agent forgets command ``id`` (its keeper is gone): a SPAWN of that id then runs."""
    deadline = time.monotonic() + 10
    while True:
        agent.send(spawn(id, "true"))
        message = agent.next()
        if not isinstance(message, Refused):
            break
        assert message.reason == RefusedReason.ID_IN_USE, message
        assert time.monotonic() < deadline, "the command's keeper never left"
        time.sleep(0.01)  # the keeper is still killing and reaping
    assert isinstance(message, Started) and message.id == id, message
    assert agent.until(Exit, id)[0] == Exit(id, 0, None)


# --- malformed and oversized frames --------------------------------------------------------------


def frame(kind: int, id: int, payload: bytes, length: int | None = None) -> bytes:
    size = 5 + len(payload) if length is None else length
    return size.to_bytes(4, "big") + bytes([kind]) + id.to_bytes(4, "big") + payload


def u32(*values: int) -> bytes:
    return b"".join(v.to_bytes(4, "big") for v in values)


def spawn_payload(argv: list[bytes], env: list[bytes], workdir: bytes = b"", tail: bytes = b"") -> bytes:
    strs = [u32(len(argv)), *(u32(len(a)) + a for a in argv), u32(len(env)), *(u32(len(e)) + e for e in env)]
    return u32(os.getuid(), os.getgid(), MIB, len(workdir)) + workdir + b"".join(strs) + tail


MALFORMED = [
    (frame(0x42, 9, b"?"), 9, RefusedReason.BAD_TYPE),
    (frame(0x83, 9, b"output from the provider?"), 9, RefusedReason.BAD_TYPE),
    (frame(0x01, 9, b"\0\0\0\0"), 9, RefusedReason.BAD_PAYLOAD),
    (frame(0x01, 9, spawn_payload([], [])), 9, RefusedReason.BAD_PAYLOAD),
    (frame(0x01, 9, spawn_payload([b"tr\0ue"], [])), 9, RefusedReason.BAD_PAYLOAD),
    (frame(0x01, 9, spawn_payload([b"true"], [], tail=b"x")), 9, RefusedReason.BAD_PAYLOAD),
    (frame(0x01, 9, u32(0, 0, 0, 0, 0xFFFFFFFF)), 9, RefusedReason.BAD_PAYLOAD),
    (frame(0x01, 9, spawn_payload([b"true"], [b""] * 65537)), 9, RefusedReason.BAD_PAYLOAD),
    (frame(0x01, 0, spawn_payload([b"true"], [])), 0, RefusedReason.BAD_PAYLOAD),
    (frame(0x02, 77, b"stdin for nobody"), 77, RefusedReason.UNKNOWN_ID),
    (frame(0x02, 0, b"stdin for id 0"), 0, RefusedReason.UNKNOWN_ID),
    (frame(0x03, 77, b"payload"), 77, RefusedReason.UNKNOWN_ID),  # the id is checked first
    (frame(0x04, 77, u32(1)), 77, RefusedReason.UNKNOWN_ID),
    ((2).to_bytes(4, "big") + b"xy", 0, RefusedReason.BAD_PAYLOAD),
    ((0).to_bytes(4, "big"), 0, RefusedReason.BAD_PAYLOAD),
]


def test_malformed_frames_are_refused_and_the_agent_goes_on(start: Start) -> None:
    agent = start()
    for data, id, reason in MALFORMED:
        agent.send_raw(data)
        refused = agent.next()
        assert isinstance(refused, Refused) and (refused.id, refused.reason) == (id, reason), (refused, data[:16])
    agent.send(spawn(5, "sleep", "100"))
    agent.until(Started, 5)
    for data, reason in [
        (encode(spawn(5, "true")), RefusedReason.ID_IN_USE),
        (frame(0x03, 5, b"x"), RefusedReason.BAD_PAYLOAD),
        (frame(0x04, 5, b"xx"), RefusedReason.BAD_PAYLOAD),
        (frame(0x04, 5, b"xxxxx"), RefusedReason.BAD_PAYLOAD),
    ]:
        agent.send_raw(data)
        refused = agent.next()
        assert isinstance(refused, Refused) and (refused.id, refused.reason) == (5, reason), refused
    assert agent.run(spawn(6, "echo", "fine"))[0] == b"fine\n"
    agent.send(Kill(5))
    assert agent.until(Exit, 5)[0] == Exit(5, None, 9)


def test_a_frame_of_the_largest_length_is_read(start: Start) -> None:
    agent = start()
    agent.send(Stdin(77, bytes(PROVIDER_MAX_LENGTH - 5)))  # length 1 MiB exactly: read, refused for its id
    refused = agent.next()
    assert isinstance(refused, Refused) and (refused.id, refused.reason) == (77, RefusedReason.UNKNOWN_ID)
    assert agent.run(spawn(1, "echo", "fine"))[0] == b"fine\n"


def test_a_frame_too_long_stops_the_agent_and_everything_it_ran(start: Start, token: str) -> None:
    agent = start()
    pids = [int(line) for line in agent.lines(escapes(1, token), 3)]
    assert all(alive(pid) for pid in pids)
    agent.send_raw(frame(0x02, 1, b"", length=PROVIDER_MAX_LENGTH + 1))  # its header alone is enough
    refused = agent.next()
    assert isinstance(refused, Refused) and (refused.id, refused.reason) == (0, RefusedReason.TOO_LONG)
    assert agent.end() == 3
    assert "frame of 1048577 bytes refused; stopping" in agent.stderr
    assert not any(alive(pid) for pid in pids)
    assert survivors(token) == []
    assert (agent.messages.get_nowait(), agent.leftover) == (None, 0), "nothing after the refusal"


def test_frames_cut_anywhere_or_sent_together_are_read_alike(start: Start) -> None:
    agent = start()
    data = encode(spawn(1, "sh", "-c", 'read line; echo "got $line"')) + encode(Stdin(1, b"x\n"))
    for byte in range(len(data)):
        agent.send_raw(data[byte : byte + 1])
    agent.send_raw(encode(Stdin(1, b"")) + encode(spawn(2, "echo", "two")) + encode(Stdin(2, b"")))
    outputs = {}
    ends: set[int] = set()
    while len(ends) < 2:
        message = agent.next()
        if isinstance(message, Output):
            outputs[message.id] = message.data
        elif isinstance(message, Exit):
            assert message.code == 0
            ends.add(message.id)
    assert outputs == {1: b"got x\n", 2: b"two\n"}


# --- the end of the channel ----------------------------------------------------------------------


def test_eof_stops_the_agent_and_everything_it_ran(start: Start, token: str) -> None:
    agent = start()
    pids = [int(line) for line in agent.lines(escapes(1, token), 3)]
    agent.send(spawn(2, "sleep", f"1000.{token}"))
    pids.append(agent.until(Started, 2)[0].pid)
    assert all(alive(pid) for pid in pids)
    agent.close()
    assert agent.end() == 0
    assert not any(alive(pid) for pid in pids), "not PID 1, the agent waits for its keepers to kill their trees"
    assert survivors(token) == []
    assert (agent.messages.get_nowait(), agent.leftover) == (None, 0)


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_sigint_stops_the_agent_and_everything_it_ran(start: Start, token: str, signo: int) -> None:
    agent = start()
    pids = [int(line) for line in agent.lines(escapes(1, token), 3)]
    agent.process.send_signal(signo)
    assert agent.end() == 0
    assert f"signal {signo}: stopping" in agent.stderr
    assert not any(alive(pid) for pid in pids)
    assert survivors(token) == []


def test_a_channel_nobody_reads_stops_the_agent(agent_binary: Path, tmp_path: Path, token: str) -> None:
    process = subprocess.Popen(
        [str(agent_binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        hello = encode(Hello(1, PROVIDER_MAX_LENGTH, WINDOW))
        got = b""
        while len(got) < len(hello):
            got += os.read(process.stdout.fileno(), len(hello) - len(got))
        assert got == hello
        process.stdout.close()  # its next frame (STARTED) has nowhere to go
        process.stdin.write(encode(spawn(1, "sleep", f"1000.{token}")))
        process.stdin.flush()
        assert process.wait(10) == 1  # the channel stays open: the failed write alone stops it
        assert process.stderr is not None
        assert b"channel write failed: Broken pipe" in process.stderr.read()
        assert survivors(token) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


# --- diagnostics and KILN_AGENT_DEBUG ------------------------------------------------------------


def test_without_the_debug_switch_stderr_stays_empty(start: Start) -> None:
    for value in (None, "0", "yes", ""):
        agent = start({} if value is None else {"KILN_AGENT_DEBUG": value})
        assert agent.run(spawn(1, "echo", "hi"))[2] == Exit(1, 0, None)
        agent.send_raw(frame(0x42, 1, b""))
        agent.until(Refused)
        agent.close()
        assert agent.end() == 0
        assert agent.stderr == "", value


def test_the_debug_switch_logs_every_frame_read_and_sent(start: Start) -> None:
    agent = start({"KILN_AGENT_DEBUG": "1"})
    secret = "0123456789abcdef SECRET beyond the prefix"
    agent.send(spawn(1, "sh", "-c", f'read line; echo "{secret}"; exit 4', credit=65536))
    started, _ = agent.until(Started, 1)
    agent.send(Stdin(1, b"x\n"), Stdin(1, b""), Credit(1, 5))
    agent.until(Exit, 1)
    agent.send_raw(frame(0x42, 9, b"?") + (2).to_bytes(4, "big") + b"xy")
    agent.until(Refused, 9)
    agent.until(Refused, 0)
    agent.close()
    assert agent.end() == 0
    lines = agent.stderr.splitlines()
    assert all(line.startswith("kiln-agent: ") for line in lines), lines
    log = [line.removeprefix("kiln-agent: ") for line in lines]
    assert re.fullmatch(rf"debug log on: pid {agent.process.pid}, uid {os.getuid()}, gid {os.getgid()}", log[0])
    spawn_length = len(encode(spawn(1, "sh", "-c", f'read line; echo "{secret}"; exit 4'))) - 4
    uid, gid = os.getuid(), os.getgid()
    spawn_prefix = r"(\\x00){7}\\x03(\\x00){3}\\x02sh(\\x00){2}"  # workdir "", argc 3, "sh"
    wanted = [
        "sent HELLO id=0 length=17 1 1048576 262144",
        rf'read SPAWN id=1 length={spawn_length} {uid} {gid} 65536 "{spawn_prefix}"\.\.\.',
        f"sent STARTED id=1 length=9 {started.pid}",
        r'read STDIN id=1 length=7 "x\\x0a"',
        r"sent STDIN_ACK id=1 length=9 2",
        r"read STDIN id=1 length=5",
        r"read CREDIT id=1 length=9 5",
        rf'sent STDOUT id=1 length={5 + len(secret) + 1} "0123456789abcdef"\.\.\.',
        r"sent EXIT id=1 length=10 0 4",
        r'read 0x42 id=9 length=6 "\?"',
        r'sent REFUSED id=9 length=\d+ 1 "unknown frame ty"\.\.\.',
        "read a frame of length 2: shorter than its header",
        r'sent REFUSED id=0 length=\d+ 2 "frame shorter th"\.\.\.',
    ]
    patterns = iter(wanted)
    pattern: str | None = next(patterns)
    for line in log[1:]:  # in this order; other lines may come between
        if pattern is not None and re.fullmatch(pattern, line):
            pattern = next(patterns, None)
    assert pattern is None, f"no line matches {pattern!r} (in order) in:\n" + "\n".join(log)
    assert "SECRET" not in agent.stderr, "no payload beyond a short prefix"
    assert len(log) == 1 + sum(1 for line in log if line.startswith(("read ", "sent ")))


def test_no_diagnostics_when_stderr_is_the_channel(start: Start, token: str) -> None:
    # A byte of diagnostics there would corrupt the framing: the decoder would see it.
    agent = start({"KILN_AGENT_DEBUG": "1"}, stderr_is_stdout=True)
    assert agent.run(spawn(1, "echo", "framed"))[0] == b"framed\n"
    agent.send_raw(frame(0x02, 1, b"", length=PROVIDER_MAX_LENGTH + 1))
    refused, _ = agent.until(Refused)
    assert refused.reason == RefusedReason.TOO_LONG
    assert agent.end() == 3
    assert (agent.messages.get_nowait(), agent.violation, agent.leftover) == (None, None, 0)
