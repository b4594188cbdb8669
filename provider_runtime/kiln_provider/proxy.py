"""The outbound proxy of one container (PROTOCOL.md §5.2): a listener at ``127.0.0.1:3128`` in the
container's network namespace, served on the provider's event loop.

The listener is made in the container's namespace (:mod:`kiln_provider.netns`), so only the
container reaches it; the connections it makes upstream are the provider's own, from its own
namespace. For each connection the proxy reads one request head (at most
:data:`~kiln_provider.outbound.MAX_HEAD` bytes, within :data:`HEAD_TIMEOUT`), checks it as
:mod:`kiln_provider.outbound` says, resolves the name itself (the operator's hosts file first,
then the provider's resolver: never the container's), checks every address, connects to one of
those addresses (within :data:`CONNECT_TIMEOUT`), and then passes the bytes both ways until
both sides have closed. A refusal is answered inside the container, and counted in the
provider's :class:`~kiln_provider.metrics.Tallies`.

Bounded: at most :data:`MAX_CONNECTIONS` connections at once per container (one more is
answered 503), what a connection holds is a read buffer each way. :meth:`OutboundProxy.close`
ends them all, when the container goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Coroutine
from typing import Any, Final

from kiln_provider.metrics import Tallies
from kiln_provider.netns import NetNamespace
from kiln_provider.outbound import (
    ESTABLISHED,
    MAX_HEAD,
    PROXY_PORT,
    OutboundPolicy,
    ProxyRequest,
    Refusal,
    check_addresses,
    check_target,
    parse_head,
)

log = logging.getLogger("kiln.provider.proxy")

HEAD_TIMEOUT: Final = 10.0
"""How long a client may take to send its request head."""
CONNECT_TIMEOUT: Final = 10.0
"""How long resolving a name and connecting to it may take (past it: 502)."""
MAX_CONNECTIONS: Final = 64
"""Connections one container's proxy carries at once."""
_COPY_BYTES: Final = 64 * 1024
LINGER: Final = 1.0
"""How long a refused client's last bytes are taken, so that the refusal reaches it."""


class OutboundProxy:
    """One container's proxy: :meth:`start` it in the container's namespace, :meth:`close` it when
    the container goes. ``rules`` are the rent's, ``policy`` the operator's; both must allow a site."""

    def __init__(self, rules: list[str], policy: OutboundPolicy, tallies: Tallies, name: str) -> None:
        self.rules = rules
        self.policy = policy
        self.tallies = tallies
        self.name = name
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, netns: NetNamespace, port: int = PROXY_PORT) -> None:
        """Listen on ``127.0.0.1:port`` inside ``netns``."""
        sock = await netns.socket()
        try:
            sock.bind(("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        await self.serve(sock)

    async def serve(self, sock: socket.socket) -> None:
        """Listen on ``sock``, bound already (in the namespace it was made in); closed with the proxy."""
        try:
            sock.listen(MAX_CONNECTIONS)
            self._server = await asyncio.start_server(self._serve, sock=sock, limit=MAX_HEAD)
        except BaseException:
            sock.close()
            raise

    async def close(self) -> None:
        """Stop listening and end every connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        busy = len(self._connections) >= MAX_CONNECTIONS
        self._connections.add(task)
        try:
            try:
                if busy:
                    raise Refusal(503, f"more than {MAX_CONNECTIONS} connections at once through this proxy", "busy")
                request, (up_reader, up_writer) = await self._open(reader)
            except Refusal as refusal:
                if refusal.counted is not None:
                    self.tallies.outbound_refused[refusal.counted] += 1
                    log.debug("%s: refused (%s): %s", self.name, refusal.counted, refusal.reason)
                await _answer(refusal, reader, writer)
                return
            try:
                if request.tunnel:
                    writer.write(ESTABLISHED)
                else:
                    up_writer.write(request.head)
                # What the client sent beyond its head (a TLS hello, a body) waits in ``reader``.
                await _both(_copy(reader, up_writer), _copy(up_reader, writer))
            finally:
                up_writer.transport.abort()
        except (OSError, asyncio.IncompleteReadError):
            pass  # either side went away: the other is closed below
        finally:
            self._connections.discard(task)
            writer.transport.abort()

    async def _open(
        self, reader: asyncio.StreamReader
    ) -> tuple[ProxyRequest, tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        """Read and check a request, and connect upstream. Raises Refusal."""
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise Refusal(431, f"the request head is over {MAX_HEAD} bytes") from None
        except TimeoutError:
            raise Refusal(408, f"no whole request head in {HEAD_TIMEOUT:g} s") from None
        request = parse_head(head)
        check_target(self.rules, self.policy, request.host, request.port)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                addresses = check_addresses(self.policy, request.host, request.port, await self._resolve(request.host))
                upstream = await _connect(addresses, request.port)
        except TimeoutError:
            raise Refusal(502, f"{request.host}:{request.port} did not answer in {CONNECT_TIMEOUT:g} s") from None
        self.tallies.outbound_allowed += 1
        return request, upstream

    async def _resolve(self, host: str) -> list[str]:
        """The addresses of ``host``: itself for an address, the operator's hosts file, else DNS."""
        with contextlib.suppress(ValueError):
            return [str(ipaddress.ip_address(host))]
        if (known := self.policy.hosts.get(host)) is not None:
            return list(known)
        try:
            found = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as e:
            raise Refusal(502, f"cannot resolve {host}: {e.strerror or e}") from None
        return list(dict.fromkeys(str(info[4][0]) for info in found))


async def _connect(addresses: list[str], port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the first of ``addresses`` that takes one on ``port``; Refusal (502) if none does."""
    failure: OSError | None = None
    for address in addresses:
        try:
            return await asyncio.open_connection(address, port, limit=_COPY_BYTES)
        except OSError as e:
            failure = e
    why = failure.strerror if failure is not None and failure.strerror else str(failure)
    raise Refusal(502, f"cannot connect to {addresses[0]} port {port}: {why}")


async def _answer(refusal: Refusal, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send the refusal, then take what the client still sends (a little, for a short while) before
    the connection is closed: closed on unread bytes, it would be reset, the answer maybe lost."""
    writer.write(refusal.response())
    if writer.can_write_eof():
        writer.write_eof()
    await writer.drain()
    taken = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(LINGER):
            while taken < MAX_HEAD * 4 and (data := await reader.read(_COPY_BYTES)):
                taken += len(data)


async def _both(*copies: Coroutine[Any, Any, None]) -> None:
    """Run ``copies`` until both end; the first error stops the other, and is raised."""
    tasks = [asyncio.ensure_future(copy) for copy in copies]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes from ``reader`` to ``writer`` until its EOF, then shut the writer's side (a half-close)."""
    while data := await reader.read(_COPY_BYTES):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
