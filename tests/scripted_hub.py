"""A hub played by the test: it speaks kiln.v1 by hand to one real provider process.

For the provider's side of protocol 1.1 before the hub has it: the test sends ``create``
with a manifest, reads the provider's ``want``, and sends the blobs within the credit the
provider grants. Offers are answered (and remembered) on their own. The frames a provider
sends (a connect's output, 1.7) wait in :meth:`Provider.frame`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from kiln.protocol import limits
from kiln.protocol.frames import Frame, FrameKind, decode, encode
from kiln.protocol.messages import PROTOCOL_NAME

LIMITS = {
    "max_message_bytes": limits.MAX_MESSAGE_BYTES,
    "max_frame_bytes": limits.MAX_FRAME_BYTES,
    "chunk_bytes": limits.CHUNK_BYTES,
    "max_window": limits.MAX_WINDOW,
    "max_pending": limits.MAX_PENDING,
    "max_streams": limits.MAX_STREAMS,
    "max_output_bytes": limits.MAX_OUTPUT_BYTES,
}


class Provider:
    """One provider's connection, as the hub sees it."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.offers: list[list[str]] = []
        self.raw_offers: list[dict[str, Any]] = []
        self.offered = asyncio.Event()
        self.credit: dict[int, int] = {}
        self._credited = asyncio.Event()
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def receive(self, timeout: float = 30) -> dict[str, Any]:
        """The next message that is not an offer or a credit."""
        async with asyncio.timeout(timeout):
            return await self.messages.get()

    async def frame(self, timeout: float = 30) -> Frame:
        """The next binary frame the provider sent."""
        async with asyncio.timeout(timeout):
            return await self.frames.get()

    async def wait_credit(self, stream: int, timeout: float = 30) -> None:
        """Until the provider has granted credit on ``stream``."""
        async with asyncio.timeout(timeout):
            while self.credit.get(stream, 0) <= 0:
                self._credited.clear()
                await self._credited.wait()

    async def send_data(self, stream: int, data: bytes, end: bool = True) -> None:
        """Send ``data`` on ``stream`` in chunks, each within the credit granted; then END."""
        size = LIMITS["chunk_bytes"]
        for start in range(0, len(data), size):
            while self.credit.get(stream, 0) <= 0:
                self._credited.clear()
                await self._credited.wait()
            self.credit[stream] -= 1
            await self.ws.send(encode(FrameKind.DATA, stream, data[start : start + size]))
        if end:
            await self.ws.send(encode(FrameKind.END, stream))

    async def wait_offer(self, image: str, present: bool = True, timeout: float = 30) -> None:
        """Until the provider's latest offer lists ``image`` (or, with ``present=False``, does not)."""
        async with asyncio.timeout(timeout):
            while not self.offers or (image in self.offers[-1]) != present:
                self.offered.clear()
                await self.offered.wait()

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if isinstance(frame, bytes):
                    await self.frames.put(decode(frame, LIMITS["chunk_bytes"]))
                    continue
                message = json.loads(frame)
                if message["type"] == "offer":
                    # The images it offers and those it loaded from the store (1.4), as one list.
                    self.offers.append(message["images"] + message.get("cached", []))
                    self.raw_offers.append(message)
                    self.offered.set()
                    await self.send({"type": "done", "re": message["id"]})
                elif message["type"] == "credit":
                    self.credit[message["stream"]] = self.credit.get(message["stream"], 0) + message["chunks"]
                    self._credited.set()
                else:
                    await self.messages.put(message)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()


class ScriptedHub:
    def __init__(self, version: str = "1.1") -> None:
        self.version = version
        """What ``welcome`` says: the version a provider then speaks."""
        self.url = ""
        self.providers: asyncio.Queue[Provider] = asyncio.Queue()

    async def _handle(self, ws: ServerConnection) -> None:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello" and hello["role"] == "provider", hello
        welcome = {
            "type": "welcome",
            "version": self.version,
            "session": "p1",
            "software": "scripted-hub",
            "limits": LIMITS,
        }
        await ws.send(json.dumps(welcome))
        provider = Provider(ws)
        await self.providers.put(provider)
        await provider._read()

    async def provider(self, timeout: float = 30) -> Provider:
        """The next provider to connect, once it offered."""
        async with asyncio.timeout(timeout):
            provider = await self.providers.get()
            await provider.offered.wait()
        return provider


@contextlib.asynccontextmanager
async def scripted_hub(version: str = "1.1") -> AsyncIterator[ScriptedHub]:
    hub = ScriptedHub(version)
    async with serve(hub._handle, "127.0.0.1", 0, subprotocols=[Subprotocol(PROTOCOL_NAME)], max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        hub.url = f"ws://127.0.0.1:{port}"
        yield hub
