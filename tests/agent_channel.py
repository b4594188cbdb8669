"""kiln-agent driven through its channel, its stdin and stdout pipes, wherever it runs: as a
child process of the test (tests/service/test_agent_pipes.py) or as PID 1 of a container that
``docker run -i`` started (tests/docker/test_agent.py)."""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from typing import TypeVar

from kiln_provider.agent_protocol import Decoder, Exit, FrameType, Message, Output, SpawnError, encode

M = TypeVar("M", bound=Message)


class AgentChannel:
    """The channel to one agent: ``send`` frames, ``next`` or ``until`` the messages back.

    Its stdout is decoded by a thread (:attr:`reader`): a violation of the protocol ends the
    stream and is raised by :meth:`next`. Join the reader before closing the process's stdout:
    a descriptor closed under it could be reused by the next agent's pipe, and the old reader
    would take the new agent's frames.
    """

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.messages: queue.Queue[Message | None] = queue.Queue()
        self.violation: Exception | None = None
        self.leftover = 0
        """Bytes of an unfinished frame when the stream ended."""
        self.reader = threading.Thread(target=self._read_frames, daemon=True)
        self.reader.start()

    def _read_frames(self) -> None:
        assert self.process.stdout is not None
        decoder = Decoder()
        try:
            while data := os.read(self.process.stdout.fileno(), 65536):
                for message in decoder.feed(data):
                    self.messages.put(message)
            self.leftover = decoder.pending
        except Exception as e:  # noqa: BLE001 - handed to the test's thread by next()
            self.violation = e
        finally:
            self.messages.put(None)

    def send(self, *messages: Message) -> None:
        self.send_raw(b"".join(encode(m) for m in messages))

    def send_raw(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def next(self, timeout: float = 10.0) -> Message:
        message = self.messages.get(timeout=timeout)
        if message is None:
            self.messages.put(None)
            raise AssertionError(f"the agent's channel ended ({self.violation or 'EOF'})")
        return message

    def until(self, kind: type[M], id: int | None = None, timeout: float = 10.0) -> tuple[M, list[Message]]:
        """Read up to the first ``kind`` message (of command ``id``); returns it and what came before."""
        deadline = time.monotonic() + timeout
        before: list[Message] = []
        while True:
            message = self.next(max(0.0, deadline - time.monotonic()))
            if isinstance(message, kind) and (id is None or message.id == id):
                return message, before
            before.append(message)

    def outcome(self, id: int, timeout: float = 10.0) -> tuple[bytes, bytes, Exit | SpawnError]:
        """The output of command ``id`` (spawned already), up to its end: its EXIT, or its ERROR."""
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(0.0, deadline - time.monotonic()))
            if message.id != id:
                continue
            if isinstance(message, Output):
                (out if message.stream == FrameType.STDOUT else err).extend(message.data)
            elif isinstance(message, Exit | SpawnError):
                return bytes(out), bytes(err), message

    def close(self) -> None:
        """Close the channel (EOF on the agent's stdin)."""
        assert self.process.stdin is not None
        if not self.process.stdin.closed:
            self.process.stdin.close()
