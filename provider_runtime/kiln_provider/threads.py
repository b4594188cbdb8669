"""The provider's threads, and the one bridge that passes chunks between them and the event loop.

Docker's calls block, so they run on threads (:class:`Pools`), while the hub's streams live
on the event loop. Chunks cross between the two here, and only here, both ways, one step at
a time, so that what is between the two sides stays bounded:

- into a thread (an upload written into a volume, an image fed to ``docker load``):
  :func:`chunks_for_thread` gives the thread an iterator that asks the loop for the chunks
  that came, at most :data:`HAND_OFF_CHUNKS` at a time, and blocks until it has them;
- out of a thread (a download read from Docker): :class:`ThreadChunks` asks a thread for the
  next chunk only once the last one was passed on; call :meth:`ThreadChunks.close` at the end.

A transfer holds a thread only while bytes move: never while it waits for the hub's credit
or data (an idle stream is a :class:`~kiln_provider.errors.TransferBroken` after its timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Final, Generic, TypeVar

from kiln.connection import Incoming
from kiln_provider.errors import TransferBroken

T = TypeVar("T")

HAND_OFF_CHUNKS: Final = 8
"""Most chunks of an upload or image passed to Docker's thread at once (2 MiB beyond the window)."""


class Pools:
    """Threads for blocking Docker calls, by kind, so that no kind can starve another.

    Lifecycle calls (create, remove, stats, images) are short and must never wait behind
    transfers; a transfer holds a thread only while bytes move (never while it waits for
    the other side). Commands take no thread: they go through the container's agent, on the
    event loop.
    """

    def __init__(self) -> None:
        self.lifecycle = ThreadPoolExecutor(max_workers=8, thread_name_prefix="kiln-lifecycle")
        self.transfers = ThreadPoolExecutor(max_workers=128, thread_name_prefix="kiln-transfer")

    async def lifecycle_call(self, fn: Callable[..., T], *args: object) -> T:
        """Run a short Docker call (create, remove, stats, images) on the lifecycle threads."""
        return await on(self.lifecycle, fn, *args)

    async def transfer_call(self, fn: Callable[..., T], *args: object) -> T:
        """Run a call that moves bytes (an upload, a load, a pull) on the transfer threads."""
        return await on(self.transfers, fn, *args)


async def on(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: object) -> T:
    """Run a blocking call on one of the pools."""
    return await asyncio.get_running_loop().run_in_executor(pool, partial(fn, *args))


async def next_chunk(incoming: Incoming, seconds: float, what: str) -> memoryview | None:
    """The next chunk of an upload (or image), None at its end; TransferBroken when nothing comes for ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            return await anext(incoming)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise TransferBroken(f"no data for {seconds:g} s: the {what} was abandoned") from None


async def _ready_chunks(incoming: Incoming, seconds: float, what: str) -> list[memoryview]:
    """The next chunk (see :func:`next_chunk`) and those that came with it, at most
    :data:`HAND_OFF_CHUNKS` in all; [] at the stream's end."""
    chunk = await next_chunk(incoming, seconds, what)
    batch = [] if chunk is None else [chunk]
    while batch and incoming.ready and len(batch) < HAND_OFF_CHUNKS:
        if (chunk := await next_chunk(incoming, seconds, what)) is None:
            break
        batch.append(chunk)
    return batch


def chunks_for_thread(
    first: memoryview | None, incoming: Incoming, seconds: float, what: str, loop: asyncio.AbstractEventLoop
) -> Iterator[memoryview]:
    """The chunks of an upload (or image) for a thread (Docker's blocking calls): ``first``, then
    the rest, taken from the event loop in batches (one hand-off between threads per batch,
    not per chunk: a load spent more time passing chunks than hashing them).

    Take ``first`` with :func:`next_chunk` on the loop before a thread starts: until it comes,
    the transfer holds no thread (and no Docker connection).
    """
    if first is None:
        return
    yield first
    while batch := asyncio.run_coroutine_threadsafe(_ready_chunks(incoming, seconds, what), loop).result():
        yield from batch


class ThreadChunks(Generic[T]):
    """The chunks a blocking iterator yields (Docker's archive), taken on the event loop one
    at a time: a thread is held only while the iterator makes the next one."""

    def __init__(self, pool: ThreadPoolExecutor, chunks: Iterator[T], close: Callable[[], None]) -> None:
        self._pool = pool
        self._chunks = chunks
        self._close = close
        self._reading: Future[T | None] | None = None

    async def next(self) -> T | None:
        """The next chunk, None at the end."""
        self._reading = self._pool.submit(next, self._chunks, None)
        return await asyncio.wrap_future(self._reading)

    async def close(self) -> None:
        """Close the iterator in a thread, once no thread is inside it (closing a generator
        another thread runs fails): that closes what Docker holds open."""
        await on(self._pool, self._close_after)

    def _close_after(self) -> None:
        if self._reading is not None:
            with contextlib.suppress(BaseException):
                self._reading.result()
        self._close()
