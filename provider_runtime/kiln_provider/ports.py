"""Connections to a port of a container (``connect``, PROTOCOL.md §5.1), carried both ways.

:func:`open_port` connects to ``127.0.0.1:port`` in the container's network namespace
(:mod:`kiln_provider.netns`); :func:`carry` then moves the bytes between that socket and the
connect's two streams of the hub until both ways have ended:

- toward the container: the requestor's DATA is written to the socket as it comes (credit goes
  back as the socket takes it), and its END shuts the socket's writing side (the service
  reads EOF);
- out of the container: what the service writes is sent as DATA frames within the credit the
  requestor grants, and its EOF becomes an END.

Each way ends on its own (a half-close), the other carries on. Nothing is held beyond the
stream's window on the way in, and a chunk on the way out: a requestor that grants no
credit stops the service's writes (TCP's own flow control), never fills the provider. No
idle timeout applies: a connection may stay quiet as long as both sides want.

How it fails: a service that resets the connection (:class:`ServiceReset`, ``transfer_failed``)
gets an ABORT toward the requestor; a requestor that aborts its stream (``transfer_failed``)
or cancels (``cancelled``) has the connection reset toward the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Final

from kiln.connection import Incoming, Outgoing
from kiln.protocol.errors import ConnectionRefused, KilnError
from kiln_provider.errors import TransferBroken
from kiln_provider.netns import NetNamespace

CONNECT_TIMEOUT: Final = 10.0
"""How long a port may take to accept a connection (a full backlog drops it silently)."""


class ServiceReset(TransferBroken):
    """The service in the container reset the connection (or vanished)."""


async def open_port(netns: NetNamespace, port: int) -> socket.socket:
    """A TCP connection to ``127.0.0.1:port`` in the namespace ``netns``, connected.

    Raises ConnectionRefused when nothing listens there, or when the port does not accept the
    connection within :data:`CONNECT_TIMEOUT`.
    """
    sock = await netns.socket()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except ConnectionRefusedError:
        sock.close()
        raise ConnectionRefused(f"nothing listens on port {port} of {netns.name}") from None
    except TimeoutError:
        sock.close()
        raise ConnectionRefused(
            f"port {port} of {netns.name} did not accept the connection in {CONNECT_TIMEOUT:g} s"
        ) from None
    except BaseException:
        sock.close()
        raise
    return sock


async def carry(sock: socket.socket, incoming: Incoming, outgoing: Outgoing, chunk_bytes: int) -> int:
    """Carry the connection ``sock`` both ways until both have ended; the bytes that came out of it.

    ``sock`` is closed on return: reset toward the service unless both ways ended cleanly.
    Raises ServiceReset when the service resets it (the requestor's stream gets an ABORT), and
    the requestor's stream's error when it aborts or the request is cancelled.
    """
    try:
        reader, writer = await asyncio.open_connection(sock=sock, limit=chunk_bytes)
    except BaseException:
        sock.close()
        raise
    loop = asyncio.get_running_loop()
    inward = loop.create_task(_inward(incoming, writer))
    outward = loop.create_task(_outward(reader, outgoing, chunk_bytes))
    reset = True  # toward the service, unless both ways ended or the request was cancelled
    try:
        done, _ = await asyncio.wait((inward, outward), return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if (error := task.exception()) is not None:
                raise error
        reset = False
        return outward.result()
    except ServiceReset:
        await _stop(inward, outward)
        with contextlib.suppress(KilnError):
            await outgoing.abort("the service reset the connection")
        raise
    except asyncio.CancelledError:
        reset = False  # cancel closes the connection (PROTOCOL.md §5.1)
        raise
    finally:
        await _stop(inward, outward)
        if reset and sock.fileno() >= 0:  # (a socket that failed is closed already)
            # A reset, not a close: the service must not take a broken request for a whole one.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # abort(): what the service did not read is dropped, never waited for.
        writer.transport.abort()


async def _stop(*tasks: asyncio.Task[object]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _inward(incoming: Incoming, writer: asyncio.StreamWriter) -> None:
    """The requestor's bytes into the socket, then its END as a shutdown of the socket's writing side."""
    try:
        async for chunk in incoming:
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
            await writer.drain()
    except OSError as e:
        raise ServiceReset(f"the service reset the connection: {e.strerror or e}") from e


async def _outward(reader: asyncio.StreamReader, outgoing: Outgoing, chunk_bytes: int) -> int:
    """The service's bytes out, as DATA frames within the requestor's credit, then END at its EOF."""
    total = 0
    try:
        while data := await reader.read(chunk_bytes):
            await outgoing.send(data)
            total += len(data)
    except OSError as e:
        raise ServiceReset(f"the service reset the connection: {e.strerror or e}") from e
    await outgoing.end()
    return total
