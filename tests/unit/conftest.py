"""The unit tier's rules, held for every test in it: one process, no network, no real time.

A test here that starts a process, opens a network socket or sleeps for real fails and says
where it belongs: tests/service (real hubs, processes, sockets), or a fake clock
(kiln.testing.loopback.FakeClock; the hub's core takes its clocks as arguments).
``asyncio.sleep(0)`` (a turn of the event loop) and threads stay allowed.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import pytest

T = TypeVar("T")


def refused(what: str) -> Callable[..., NoReturn]:
    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError(f"tests/unit is pure: {what} belongs in tests/service, or give the code a fake clock")

    return refuse


@pytest.fixture(autouse=True)
def pure(monkeypatch: pytest.MonkeyPatch) -> None:
    turn = asyncio.sleep

    def sleep(delay: float, result: T | None = None) -> Coroutine[Any, Any, T | None]:
        if delay > 0:
            refused(f"asyncio.sleep({delay})")()
        return turn(0, result)

    monkeypatch.setattr(subprocess.Popen, "__init__", refused("a process"))
    monkeypatch.setattr(time, "sleep", refused("time.sleep"))
    monkeypatch.setattr(asyncio, "sleep", sleep)
    for call in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, call, refused(f"a socket ({call})"))
