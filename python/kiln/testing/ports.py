"""Waiting for a server in a container to listen (1.7): a server started by a command takes a
moment to bind its port, and a ``connect`` before then is refused."""

from __future__ import annotations

import asyncio

from kiln.protocol.errors import ConnectionRefused
from kiln.requestor.activity import Activity


async def listening(act: Activity, port: int, within: float = 10.0) -> None:
    """Return once something listens on ``port`` in ``act``'s container; TimeoutError after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            try:
                _, writer = await act.connect(port)
            except ConnectionRefused:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return
