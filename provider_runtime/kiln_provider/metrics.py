"""What the provider holds and did, as Prometheus metrics (``kiln provider --metrics-port``), and
what its containers use, as the hub's ``usage`` (1.6) reports it.

:class:`Tallies` holds the provider's counts (plain numbers, bumped on the event loop where things
happen); :func:`measure` reads containers' cgroups (blocking: on a thread). :func:`serve_metrics`
serves a registry of the provider's own (never prometheus_client's global one) on threads of its
own: each scrape asks the event loop for a snapshot of what it holds (a list, no I/O), then reads
the cgroups and volumes on the server's thread, so a scrape never blocks the loop. The server is
bounded: at most :data:`MAX_SCRAPES` connections at once (more are closed unanswered), each
dropped after :data:`SCRAPE_TIMEOUT` seconds of silence, or that long after it came::

    server = serve_metrics(MetricsSource(...), host, port)   # port 0: a free one (server.port)
    ...
    server.close()                                         # when the provider stops

The metrics (no label whose values can grow: ``source`` is ``hub`` or ``registry``, ``reason`` one of four words):
``kiln_provider_containers``, ``kiln_provider_cpu_seconds_total`` (all its containers', ended
ones too), ``kiln_provider_memory_bytes``, ``kiln_provider_volumes``, ``kiln_provider_volume_bytes``
(what the volumes' files take on disk), ``kiln_provider_image_cache_bytes``,
``kiln_provider_image_pulls_total{source}``, ``kiln_provider_image_pull_bytes_total`` (bytes
received from the hub's store), ``kiln_provider_agent_channel_errors_total``,
``kiln_provider_outbound_allowed_total`` and ``kiln_provider_outbound_refused_total{reason}``
(the containers' outbound proxies),
``kiln_build_info{version,protocol}`` and the process's own (``process_*``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any, Final, Literal, TypeAlias
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from kiln.__about__ import __version__
from kiln.protocol.messages import PROTOCOL_VERSION, ActivityUsage
from kiln_provider.outbound import REFUSAL_REASONS, RefusalReason
from kiln_provider.procfs import Cgroup

SNAPSHOT_TIMEOUT: Final = 5.0
"""How long a scrape waits for the event loop's snapshot (a loop that busy fails the scrape)."""
MAX_SCRAPES: Final = 8
"""Connections the metrics server serves at once; one more is closed unanswered."""
SCRAPE_TIMEOUT: Final = 10.0
"""Seconds a connection to the metrics server may stay silent, and may last in all, before it is dropped."""
PullSource: TypeAlias = Literal["hub", "registry"]
"""Where an image came from: the hub's store (loaded), or a registry (pulled, ``--pull``)."""
PULL_SOURCES: Final[tuple[PullSource, ...]] = ("hub", "registry")


@dataclass
class Tallies:
    """What the provider counted since it started. Bumped on the event loop; read by a scrape's snapshot."""

    ended_cpu_seconds: float = 0.0
    """The CPU time of the containers it removed (the live ones' is read from their cgroups)."""
    image_pulls: Counter[PullSource] = field(default_factory=Counter)
    """Images loaded from the hub's store, and pulled from a registry (``--pull``)."""
    image_pull_bytes: int = 0
    """Bytes of images received from the hub's store."""
    agent_channel_errors: int = 0
    """Containers whose agent channel broke other than by the provider's close."""
    outbound_allowed: int = 0
    """Connections the containers' outbound proxies made (PROTOCOL.md §5.2)."""
    outbound_refused: Counter[RefusalReason] = field(default_factory=Counter)
    """Requests those proxies refused, by why (:data:`~kiln_provider.outbound.REFUSAL_REASONS`)."""

    def agent_failed(self) -> None:
        self.agent_channel_errors += 1


@dataclass(frozen=True)
class Probe:
    """A live container, as :func:`measure` reads it: its cgroup, and what it used when last read."""

    activity: str
    cgroup: Cgroup
    cpu_seconds: float


def measure(probes: Iterable[Probe]) -> list[ActivityUsage]:
    """What each container uses now, from its cgroup (blocking: call it on a thread). One whose
    cgroup is gone (it ended) keeps the CPU time it was last read with, and no memory."""
    usage = []
    for probe in probes:
        cpu = probe.cgroup.cpu_seconds()
        memory = probe.cgroup.memory_bytes()
        usage.append(
            ActivityUsage(
                activity=probe.activity,
                cpu_seconds=max(cpu if cpu is not None else 0.0, probe.cpu_seconds),
                memory=memory or 0,
            )
        )
    return usage


@dataclass(frozen=True)
class Snapshot:
    """What the provider holds and counted, copied on the event loop for a scrape."""

    probes: list[Probe]
    ended_cpu_seconds: float
    image_pulls: dict[PullSource, int]
    image_pull_bytes: int
    agent_channel_errors: int
    image_cache_bytes: int
    outbound_allowed: int = 0
    outbound_refused: dict[RefusalReason, int] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricsSource:
    """Where a scrape reads from: ``snapshot`` runs on ``loop``; ``volumes`` (count, bytes on disk)
    on the scrape's thread."""

    loop: asyncio.AbstractEventLoop
    snapshot: Callable[[], Snapshot]
    volumes: Callable[[], tuple[int, int]]


class ProviderCollector(Collector):
    """The provider's metrics, read at each scrape (on the metrics server's thread)."""

    def __init__(self, source: MetricsSource) -> None:
        self.source = source
        self._lock = threading.Lock()
        self._cpu_seconds = 0.0  # the highest total told: a counter never goes back

    async def _snapshot(self) -> Snapshot:
        return self.source.snapshot()

    def collect(self) -> Iterator[Metric]:
        future = asyncio.run_coroutine_threadsafe(self._snapshot(), self.source.loop)
        snapshot = future.result(SNAPSHOT_TIMEOUT)
        usage = measure(snapshot.probes)
        volumes, volume_bytes = self.source.volumes()
        with self._lock:
            # A container just removed is tallied at the CPU time last read, then its last read:
            # between the two a sum could dip below what a scrape before saw.
            total = snapshot.ended_cpu_seconds + sum(u.cpu_seconds for u in usage)
            self._cpu_seconds = max(self._cpu_seconds, total)
            cpu_seconds = self._cpu_seconds
        yield GaugeMetricFamily("kiln_provider_containers", "Containers the provider holds.", len(usage))
        yield CounterMetricFamily(
            "kiln_provider_cpu_seconds", "CPU time its containers used, ended ones included.", cpu_seconds
        )
        memory = sum(u.memory for u in usage)
        yield GaugeMetricFamily("kiln_provider_memory_bytes", "Memory its containers use now.", memory)
        yield GaugeMetricFamily("kiln_provider_volumes", "Volumes of its containers.", volumes)
        yield GaugeMetricFamily(
            "kiln_provider_volume_bytes", "Bytes the volumes of its containers take on disk.", volume_bytes
        )
        yield GaugeMetricFamily(
            "kiln_provider_image_cache_bytes",
            "Bytes of the images loaded or pulled for requestors (--image-cache bounds them).",
            snapshot.image_cache_bytes,
        )
        pulls = CounterMetricFamily(
            "kiln_provider_image_pulls",
            "Images loaded from the hub's store (source=hub) or pulled from a registry (source=registry).",
            labels=["source"],
        )
        for source in PULL_SOURCES:
            pulls.add_metric([source], snapshot.image_pulls.get(source, 0))
        yield pulls
        yield CounterMetricFamily(
            "kiln_provider_image_pull_bytes",
            "Bytes of images received from the hub's store.",
            snapshot.image_pull_bytes,
        )
        yield CounterMetricFamily(
            "kiln_provider_agent_channel_errors",
            "Containers whose agent channel broke (a protocol violation, no hello, the container ended).",
            snapshot.agent_channel_errors,
        )
        yield CounterMetricFamily(
            "kiln_provider_outbound_allowed",
            "Connections the containers' outbound proxies made to sites their rent and the provider allow.",
            snapshot.outbound_allowed,
        )
        refused = CounterMetricFamily(
            "kiln_provider_outbound_refused",
            "Requests the containers' outbound proxies refused (403, or 503 when busy), by why: outside the "
            "rent's rules (rent), outside the provider's policy (policy), a private address (private), busy.",
            labels=["reason"],
        )
        for reason in REFUSAL_REASONS:
            refused.add_metric([reason], snapshot.outbound_refused.get(reason, 0))
        yield refused
        yield InfoMetricFamily(
            "kiln_build", "The Kiln version.", {"version": __version__, "protocol": PROTOCOL_VERSION}
        )


class _Handler(WSGIRequestHandler):
    timeout = SCRAPE_TIMEOUT  # the socket's: a client that stalls is dropped

    def setup(self) -> None:
        super().setup()
        # A client that trickles its request (a byte now and then) is never silent for long: it is
        # cut off once the connection is SCRAPE_TIMEOUT old, so it cannot hold a slot for ever.
        self._deadline = threading.Timer(SCRAPE_TIMEOUT, self._cut)
        self._deadline.daemon = True
        self._deadline.start()

    def _cut(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self._deadline.cancel()
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing: a scrape every few seconds is no news."""


class _Server(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most :data:`MAX_SCRAPES` of them."""

    daemon_threads = True  # a scrape under way does not hold the provider's exit
    slots: threading.BoundedSemaphore  # each server's own (see serve_metrics)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class MetricsServer:
    """The metrics' HTTP server, on threads of its own. Call :meth:`close` when the provider stops."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="kiln-metrics", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """The host and port it listens on (the port the system chose for port 0)."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        """Stop serving, and wait for the thread (blocks up to half a second: call it on a thread)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def registry_of(source: MetricsSource) -> CollectorRegistry:
    """A registry of the provider's metrics and its process's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProviderCollector(source))
    ProcessCollector(registry=registry)
    return registry


def serve_metrics(source: MetricsSource, host: str, port: int) -> MetricsServer:
    """Serve the provider's metrics at ``http://host:port/metrics``. OSError if it cannot listen."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]

    class Server(_Server):
        address_family = family  # IPv6 too, as the host says
        slots = threading.BoundedSemaphore(MAX_SCRAPES)  # this server's own

    app = make_wsgi_app(registry_of(source))
    return MetricsServer(make_server(str(address[0]), port, app, Server, handler_class=_Handler))


def usage_entries(usage: Sequence[ActivityUsage], most: int) -> list[ActivityUsage]:
    """At most ``most`` entries, the busiest first (a provider past the protocol's cap tells of those)."""
    if len(usage) <= most:
        return list(usage)
    return sorted(usage, key=lambda u: u.cpu_seconds, reverse=True)[:most]
