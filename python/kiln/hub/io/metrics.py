"""The hub's metrics in the Prometheus text format: what ``GET /metrics`` answers (:mod:`kiln.hub.io.http`).

Nothing is counted here: :class:`HubCollector` reads the core's state when Prometheus scrapes
(peers, the market's sums, activities, the store's catalog, and what the core counted:
:class:`~kiln.hub.tallies.Tallies`), so a hub that is never scraped pays nothing for its metrics.
Each hub has registries of its own, with the process's own metrics
(``process_*``) beside the hub's: :class:`Metrics`.

Names follow Prometheus' conventions: the ``kiln_`` prefix, base units (bytes, seconds, credits),
``_total`` counters, and labels only from fixed sets (an activity's state, a direction, a role, an
error code), never an activity id or a peer's name: a label whose values grow without bound would
grow every scrape with it.

A scrape looks at each connected peer once (to count requestors and streams) and at nothing else
per provider: the market keeps its sums as offers come and go (:class:`~kiln.hub.market.Totals`).
The process's metrics are read in a thread: counting its open files lists them, one per peer.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from kiln.__about__ import __version__
from kiln.hub.core import HubCore
from kiln.hub.flow import HUB
from kiln.protocol.messages import PROTOCOL_VERSION
from kiln.protocol.money import MICRO

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of the Prometheus text format that :meth:`Metrics.exposition` writes."""
ACTIVITY_STATES: Final = ("creating", "ready", "destroying", "absent")
"""Every state an activity is in (:class:`~kiln.hub.peers.Lease`): each is reported, 0 or not."""
ROLES: Final = ("requestor", "provider")
"""The roles peers join as: each is reported, 0 or not."""


class HubCollector:
    """Reads the metrics of a hub's core at each scrape (a prometheus_client collector).

    ``viewers`` counts the dashboards watching the hub live.
    """

    def __init__(self, core: HubCore, viewers: Callable[[], int]) -> None:
        self.core = core
        self.viewers = viewers

    def collect(self) -> Iterator[Metric]:
        core = self.core
        build = GaugeMetricFamily(
            "kiln_build_info",
            "The hub's version and the newest protocol it speaks (always 1).",
            labels=["version", "protocol"],
        )
        build.add_metric([__version__, PROTOCOL_VERSION], 1)
        yield build
        requestors = streams = remote = 0
        for peer in core.peers.values():
            if peer.role == "requestor":
                requestors += 1
            elif peer.hub is not None:  # another hub's provider (several hubs): sold here, not connected
                remote += 1
            # Each stream once: at its sending peer, or at its receiver when the image store sends it.
            streams += len(peer.sends)
            if peer.receives:
                streams += sum(1 for route in peer.receives.values() if route.sender[0] == HUB)
        yield GaugeMetricFamily("kiln_providers", "Providers connected (welcomed).", value=len(core.providers) - remote)
        yield GaugeMetricFamily(
            "kiln_market_providers",
            "Providers this hub sells: those connected, and those of the other hubs of its database.",
            value=len(core.providers),
        )
        yield GaugeMetricFamily("kiln_requestors", "Requestors connected (welcomed).", value=requestors)
        yield GaugeMetricFamily("kiln_streams_open", "Streams the hub relays or serves, each one way.", value=streams)
        yield from self._capacity()
        yield from self._tallies()
        states = Counter(lease.state for lease in core.activities.values())
        activities = GaugeMetricFamily("kiln_activities", "Activities the hub holds, by state.", labels=["state"])
        for state in ACTIVITY_STATES:
            activities.add_metric([state], states[state])
        yield activities
        catalog = core.catalog
        yield GaugeMetricFamily(
            "kiln_store_bytes",
            "Bytes the image store holds (each layer at its size or extracted size, if larger).",
            value=catalog.used,
        )
        yield GaugeMetricFamily("kiln_store_images", "Images in the hub's store.", value=len(catalog.images))
        yield GaugeMetricFamily("kiln_dashboard_viewers", "Dashboards watching the hub live.", value=self.viewers())

    def _capacity(self) -> Iterator[Metric]:
        """What providers offer and what of it is rented (reserved for activities): the market's sums."""
        offered, free = self.core.market.offered_total, self.core.market.free_total
        rented = round(max(offered.cpus - free.cpus, 0.0), 6)  # sums of fractions of CPUs: no float noise
        yield GaugeMetricFamily(
            "kiln_offered_cpus", "CPUs the connected providers offer.", value=round(offered.cpus, 6)
        )
        yield GaugeMetricFamily("kiln_rented_cpus", "Of those, CPUs reserved for activities.", value=rented)
        yield GaugeMetricFamily(
            "kiln_offered_memory_bytes", "Memory the connected providers offer.", value=offered.memory
        )
        yield GaugeMetricFamily(
            "kiln_rented_memory_bytes", "Of that, memory reserved for activities.", value=offered.memory - free.memory
        )
        yield GaugeMetricFamily(
            "kiln_offered_storage_bytes", "Storage the connected providers offer.", value=offered.storage
        )
        yield GaugeMetricFamily(
            "kiln_rented_storage_bytes",
            "Of that, storage reserved for activities' volumes.",
            value=offered.storage - free.storage,
        )

    def _tallies(self) -> Iterator[Metric]:
        """What the core counted since the hub started (:class:`~kiln.hub.tallies.Tallies`)."""
        tallies = self.core.tallies
        yield GaugeMetricFamily(
            "kiln_used_cpus", "CPUs the activities use, as their providers last reported.", value=tallies.used_cpus
        )
        yield GaugeMetricFamily(
            "kiln_used_memory_bytes",
            "Memory the activities use, as their providers last reported.",
            value=tallies.used_memory,
        )
        rents = CounterMetricFamily(
            "kiln_rents", "Rents answered, by result: ok, or the error's code.", labels=["result"]
        )
        for result, count in sorted(tallies.rents.items()):
            rents.add_metric([result], count)
        yield rents
        yield HistogramMetricFamily(
            "kiln_rent_duration_seconds",
            "Seconds from a rent's arrival to its rented or its error.",
            buckets=[
                ("+Inf" if math.isinf(bound) else repr(bound), count) for bound, count in tallies.rent_histogram()
            ],
            sum_value=tallies.rent_sum,
        )
        yield CounterMetricFamily("kiln_commands", "Commands (exec) relayed to providers.", value=tallies.commands)
        yield CounterMetricFamily(
            "kiln_connects", "Connections to a port of a container relayed to providers.", value=tallies.connects
        )
        yield CounterMetricFamily(
            "kiln_command_failures", "Commands that failed or exited nonzero.", value=tallies.command_failures
        )
        relayed = CounterMetricFamily("kiln_relayed_bytes", "Stream data relayed, by direction.", labels=["direction"])
        relayed.add_metric(["to_provider"], tallies.to_provider_bytes)
        relayed.add_metric(["to_requestor"], tallies.to_requestor_bytes)
        yield relayed
        yield CounterMetricFamily("kiln_image_pushes", "Images pushed into the hub's store.", value=tallies.pushes)
        yield CounterMetricFamily("kiln_image_pulls", "Stored images sent to providers.", value=tallies.pulls)
        yield CounterMetricFamily(
            "kiln_image_pull_bytes", "Bytes of stored images sent to providers.", value=tallies.pull_bytes
        )
        joins = CounterMetricFamily("kiln_connections", "Peers welcomed, by role.", labels=["role"])
        for role in ROLES:
            joins.add_metric([role], tallies.joins[role])
        yield joins
        refused = CounterMetricFamily(
            "kiln_connections_refused",
            "Connections turned away before or at their hello, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(tallies.refused.items()):
            refused.add_metric([reason], count)
        yield refused
        yield CounterMetricFamily(
            "kiln_activities_lost", "Activities lost (their provider gone, or ended by the hub).", value=tallies.lost
        )
        if self.core.ledger.accounts is not None:
            yield CounterMetricFamily(
                "kiln_ledger_captured_credits",
                "Credits captured to providers from priced activities.",
                value=tallies.captured / MICRO,
            )
            yield CounterMetricFamily(
                "kiln_ledger_fees_credits", "Credits captured to the hub (its fee).", value=tallies.fees / MICRO
            )


class Metrics:
    """A hub's metrics: its own (:class:`HubCollector`) in one registry, its process's (``process_*``) in
    another, each read where it costs the hub least (:meth:`exposition`)."""

    def __init__(self, core: HubCore, viewers: Callable[[], int]) -> None:
        self.hub = CollectorRegistry()
        self.hub.register(HubCollector(core, viewers))
        self.process = CollectorRegistry()
        ProcessCollector(registry=self.process)

    async def exposition(self) -> bytes:
        """Both registries, read now, in the Prometheus text format (:data:`CONTENT_TYPE`).

        The hub's are read on the event loop, between two calls of the core (never from another
        thread: the core is not to be read while it changes); the process's in a thread, as counting
        its open files lists them (milliseconds at 10,000 peers, which the event loop does not wait for).
        """
        hub = generate_latest(self.hub)
        return hub + await asyncio.to_thread(generate_latest, self.process)
