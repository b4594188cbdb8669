"""Many simulated providers in one process, for scale tests and benchmarks of the hub.

Each is a real connection speaking kiln.v1 through the session core: it offers capacity
and an image, says yes to every ``create`` and ``destroy`` at once, and answers every
``exec`` with an empty result. No Docker is involved, so thousands fit on one machine::

    async with simulated_providers(url, 5000) as names:
        ...  # rent, map, market against a hub that sees 5000 providers
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

from kiln.connection import Connection
from kiln.hub.server import raise_open_file_limit
from kiln.protocol.messages import Create, Destroy, Done, Error, Exec, ExecResult, Offer, Resources, clip
from kiln.protocol.session import Event, Requested

DIAL_AT_ONCE: Final = 200
"""Connections opened concurrently: a burst the hub's listen backlog takes."""


class SimulatedProvider:
    """One provider that answers at once, without containers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.conn: Connection | None = None
        self._replies: set[asyncio.Task[None]] = set()

    def on_event(self, event: Event) -> None:
        if not isinstance(event, Requested) or self.conn is None:
            return
        message = event.message
        reply: Done | ExecResult | Error
        if isinstance(message, Create | Destroy):
            reply = Done(type="done", re=message.id)
        elif isinstance(message, Exec):
            reply = ExecResult(type="exec_result", re=message.id, exit_code=0, timed_out=False, stdout="", stderr="",
                               duration=0.0)  # fmt: skip
        else:
            reply = Error(type="error", re=message.id, code="container_failed", message=clip("simulated: no files"))
        task = asyncio.create_task(self.conn.reply(reply))  # owned: kept until done, awaited on close
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    async def close(self) -> None:
        if self._replies:
            await asyncio.gather(*self._replies, return_exceptions=True)
        if self.conn is not None:
            await self.conn.close()


@contextlib.asynccontextmanager
async def simulated_providers(
    url: str,
    count: int,
    *,
    images: tuple[str, ...] = ("kiln-busybox:latest",),
    cpus: float = 4,
    memory: int = 8 * 2**30,
    prefix: str = "sim",
) -> AsyncIterator[list[str]]:
    """Connect ``count`` simulated providers to the hub at ``url``; yields their names, disconnects on exit."""
    raise_open_file_limit()
    providers = [SimulatedProvider(f"{prefix}-{i:05}") for i in range(count)]
    gate = asyncio.Semaphore(DIAL_AT_ONCE)

    async def join(provider: SimulatedProvider) -> None:
        async with gate:
            conn = await Connection.open(url, role="provider", name=provider.name, on_event=provider.on_event)
            provider.conn = conn
            offer = Offer(type="offer", id=conn.new_id(), resources=Resources(cpus=cpus, memory=memory), arch="amd64",
                          images=list(images))  # fmt: skip
            await conn.start(offer)

    async with asyncio.TaskGroup() as tg:
        readers: list[asyncio.Task[None]] = []
        try:
            async with asyncio.TaskGroup() as joining:
                for provider in providers:
                    joining.create_task(join(provider))
            for provider in providers:
                assert provider.conn is not None
                readers.append(tg.create_task(provider.conn.run()))
            yield [p.name for p in providers]
        finally:
            for provider in providers:
                await provider.close()
            for reader in readers:
                reader.cancel()
