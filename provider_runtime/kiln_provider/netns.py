"""Sockets made in a container's network namespace: how the provider reaches a container's loopback.

A task container has no network (Docker's ``none``) but its own loopback, where its services
listen. The provider runs beside dockerd, as root, so it can enter that namespace: a thread
calls ``setns(2)`` on the namespace's file (``/proc/<agent's pid>/ns/net``), makes a socket
there and comes back to the provider's own namespace. A socket keeps the namespace it was made
in for its whole life, so from then on it is an ordinary socket of the event loop: a
connection to ``127.0.0.1:port`` reaches the container's loopback (``connect``, PROTOCOL.md
§5.1), and a listener bound to ``127.0.0.1:3128`` is served to the container only (its
outbound proxy, §5.2). Nothing runs inside the container for either.

Only the thread that calls ``setns`` changes namespace. Each socket is made on a new,
short-lived thread of its own (never a pool's, which would run other work there if coming
back failed), which comes back before it ends all the same.

:class:`NetNamespace` holds the namespace by an open file, taken when the container starts:
it stays the same namespace whatever becomes of the process's id. It refuses a namespace
that is the provider's own (a provider in another PID namespace than dockerd's would read
some other process's), since a socket made there would reach the host's loopback instead.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Final, TypeVar

from kiln_provider.errors import DockerFailed

T = TypeVar("T")

CLONE_NEWNET: Final = 0x40000000
"""``setns(2)``'s ``nstype`` for a network namespace (``<sched.h>``)."""

_libc = ctypes.CDLL(None, use_errno=True)
_setns = _libc.setns
_setns.argtypes = [ctypes.c_int, ctypes.c_int]
_setns.restype = ctypes.c_int


def _enter(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd``."""
    if _setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def _identity(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino


class NetNamespace:
    """A container's network namespace, held open until :meth:`close`.

    Open it with :meth:`of_process` (blocking: a file under ``/proc``), make sockets in it with
    :meth:`socket`, and close it when the container is removed.
    """

    def __init__(self, fd: int, name: str) -> None:
        self._fd = fd
        self.name = name
        """Whose namespace it is, for messages."""

    @classmethod
    def of_process(cls, pid: int, name: str) -> NetNamespace:
        """The network namespace process ``pid`` (a container's agent) lives in.

        Raises DockerFailed when it cannot be opened (no such process, or not root), or when it
        is the provider's own.
        """
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise DockerFailed(f"cannot open the network namespace of {name}: {e.strerror}") from e
        try:
            if _identity(os.fstat(fd)) == _identity(os.stat("/proc/self/ns/net")):
                raise DockerFailed(
                    f"the container {name} shares the provider's network namespace (is the provider "
                    "in another PID namespace than the Docker engine?): its ports cannot be reached"
                )
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, name)

    async def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A new non-blocking socket in this namespace (made on a thread of its own)."""
        if self._fd < 0:
            raise DockerFailed(f"the container {self.name} is being removed")
        # The thread's own copy of the file: a close() meanwhile cannot hand it another's.
        future = _on_own_thread(os.dup(self._fd), lambda: socket.socket(family, kind))
        try:
            made = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(_close_made)  # made all the same: closed, not leaked
            raise
        made.setblocking(False)
        return made

    def close(self) -> None:
        """Let the namespace go (sockets made in it keep it until they close)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _close_made(future: Future[socket.socket]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


def _on_own_thread(fd: int, make: Callable[[], T]) -> Future[T]:
    """``make()`` on a new thread that enters the namespace open at ``fd``, then comes back (and closes ``fd``)."""
    done: Future[T] = Future()

    def run() -> None:
        try:
            done.set_result(_inside(fd, make))
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task, raised there
            done.set_exception(e)
        finally:
            os.close(fd)

    try:
        threading.Thread(target=run, name="kiln-netns", daemon=True).start()
    except BaseException:
        os.close(fd)
        raise
    return done


def _inside(fd: int, make: Callable[[], T]) -> T:
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _enter(fd)
        try:
            return make()
        finally:
            _enter(own)
    finally:
        os.close(own)
