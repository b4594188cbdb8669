"""What a provider process is told: :class:`ProviderConfig`, the settings ``kiln provider`` takes.

The command line (``kiln.cli``) reads the flags, the environment and the settings file, and
builds one of these; :class:`~kiln_provider.runtime.ProviderRuntime` serves a hub with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kiln.protocol.messages import Price
from kiln_provider.image_cache import DEFAULT_BUDGET
from kiln_provider.outbound import OutboundPolicy
from kiln_provider.volume import MAX_VOLUMES


@dataclass(frozen=True)
class ProviderConfig:
    hubs: tuple[str, ...]
    """The URLs (``ws://`` or ``wss://``) of the hubs of one market: the provider is on one at a
    time, and dials the next in turn when its hub dies (:class:`~kiln.connection.HubRing`)."""
    name: str
    """The provider's name at the hub (one provider per name at a time)."""
    cpus: float | None = None
    """CPUs to offer (None: all the host has)."""
    memory: int | None = None
    """Bytes of memory to offer (None: three quarters of the host's)."""
    storage: int | None = None
    """Bytes of storage to offer (None: 10 GiB), never more than the disk has free."""
    labels: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    """The credential the hub knows this provider by (None: a hub that asks for none)."""
    pids_limit: int = 256
    stream_idle_timeout: float = 30.0
    """A transfer that moves nothing for this long is aborted and its Docker stream closed."""
    name_wait: float = 30.0
    """How long to keep trying while the hub says another provider holds our name."""
    image_cache: int = DEFAULT_BUDGET
    """Bytes of images loaded for requestors to keep; past it the least recently used go."""
    data_dir: Path | None = None
    """Where the record of loaded images lives (default: :func:`~kiln_provider.image_cache.default_data_dir`)."""
    pull: bool = False
    """Pull an image Docker lacks from its registry when a create names it without a manifest."""
    allow_root: bool = False
    """Let a requestor that asks for it run its commands as root (uid 0, still without capabilities)."""
    ca: Path | None = None
    """The PEM file of the CA that signed a ``wss://`` hub's certificate (None: the system's trust store)."""
    grace: float = 120.0
    """How long containers outlive a lost hub connection, for a restarted hub to hand them back."""
    max_containers: int = MAX_VOLUMES
    """The most containers (each with a volume, a loop device) at once; a create past it is refused."""
    price: Price | None = None
    """(1.5) What an activity here costs (in its offer; None: free)."""
    images: tuple[str, ...] = ()
    """Patterns (fnmatch) of the tags of local images to offer, besides labelled ones (``org.kiln.offer``)."""
    metrics_port: int | None = None
    """Serve the provider's metrics (Prometheus) on this port (0: a free one, logged; None: none)."""
    metrics_host: str = "127.0.0.1"
    """The address the metrics are served on (loopback unless told otherwise)."""
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)
    """(1.7) What containers may reach through their proxy (default: nothing; ``--outbound``,
    ``--outbound-private``, ``--hosts``)."""
