"""The market: providers' offers, requestors' demands, and the capacity reserved between them.

Pure bookkeeping, no I/O. The hub calls :meth:`Market.choose` to pick a provider for a
demand, :meth:`Market.reserve` to take its capacity, and :meth:`Market.release` to give it
back. Reserved capacity is never offered again until released, so two requestors can
never be sold the same CPUs, memory or storage, and a provider is never over-committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kiln.protocol.errors import NoMatch
from kiln.protocol.messages import Demand, Offer, ProviderInfo, Resources
from kiln.protocol.sizes import format_size


@dataclass
class Seller:
    """One provider's standing offer and what is reserved of it."""

    name: str
    offer: Offer
    cpus: float = 0.0
    memory: int = 0
    storage: int = 0
    activities: int = 0
    images: frozenset[str] = field(default_factory=frozenset)

    @property
    def free(self) -> Resources:
        total = self.offer.resources
        return Resources(
            cpus=max(round(total.cpus - self.cpus, 6), 0.0),
            memory=max(total.memory - self.memory, 0),
            storage=max(total.storage - self.storage, 0),
        )

    def fits(self, demand: Demand) -> bool:
        """Whether what is still free meets ``demand``."""
        return meets(self.free, self.offer.labels, demand)

    def could_ever_fit(self, demand: Demand) -> bool:
        """Whether the whole offer would meet ``demand`` if nothing were reserved."""
        return meets(self.offer.resources, self.offer.labels, demand)


def meets(resources: Resources, labels: dict[str, str], demand: Demand) -> bool:
    """Whether ``resources`` with ``labels`` satisfy ``demand`` (the one matching rule)."""
    return (
        resources.cpus >= demand.cpus - 1e-9
        and resources.memory >= demand.memory
        and resources.storage >= demand.storage
        and all(labels.get(key) == value for key, value in demand.labels.items())
    )


class Market:
    """Offers keyed by the provider's peer id."""

    def __init__(self) -> None:
        self._sellers: dict[int, Seller] = {}

    def __contains__(self, peer: int) -> bool:
        return peer in self._sellers

    def update(self, peer: int, name: str, offer: Offer) -> None:
        """Record (or replace) a provider's offer; what it already reserved stays reserved."""
        seller = self._sellers.get(peer)
        if seller is None:
            self._sellers[peer] = Seller(name=name, offer=offer, images=frozenset(offer.images))
        else:
            seller.offer = offer
            seller.images = frozenset(offer.images)

    def remove(self, peer: int) -> None:
        self._sellers.pop(peer, None)

    def choose(self, image: str, demand: Demand, exclude: frozenset[str] = frozenset()) -> tuple[int, bool]:
        """The peer id of the best provider for ``demand`` and whether it holds ``image``.

        Providers named in ``exclude`` are passed over; of the rest, those holding the
        image come first, then the least loaded. Raises :class:`~kiln.protocol.errors.NoMatch` naming
        what nobody offers, or saying that all are busy.
        """
        candidates = [
            (peer, seller)
            for peer, seller in self._sellers.items()
            if seller.name not in exclude and seller.fits(demand)
        ]
        if not candidates:
            raise NoMatch(self._why_not(demand, exclude))
        peer, seller = min(
            candidates,
            key=lambda c: (image not in c[1].images, c[1].activities, -c[1].free.memory, c[1].name),
        )
        return peer, image in seller.images

    def reserve(self, peer: int, resources: Resources) -> None:
        seller = self._sellers[peer]
        seller.cpus += resources.cpus
        seller.memory += resources.memory
        seller.storage += resources.storage
        seller.activities += 1

    def release(self, peer: int, resources: Resources) -> None:
        seller = self._sellers.get(peer)
        if seller is None:
            return
        seller.cpus = max(seller.cpus - resources.cpus, 0.0)
        seller.memory = max(seller.memory - resources.memory, 0)
        seller.storage = max(seller.storage - resources.storage, 0)
        seller.activities = max(seller.activities - 1, 0)

    def describe(self) -> list[ProviderInfo]:
        return [
            ProviderInfo(
                name=s.name,
                arch=s.offer.arch,
                labels=s.offer.labels,
                images=sorted(s.images),
                offered=s.offer.resources,
                free=s.free,
                activities=s.activities,
            )
            for s in sorted(self._sellers.values(), key=lambda s: s.name)
        ]

    def _why_not(self, demand: Demand, exclude: frozenset[str] = frozenset()) -> str:
        sellers = [s for s in self._sellers.values() if s.name not in exclude]
        if not self._sellers:
            return "no provider is connected to the hub"
        if not sellers:
            return f"every connected provider ({len(self._sellers)}) is excluded by the request"
        offers = [s.offer for s in sellers]
        checks = [
            (
                all(o.resources.cpus < demand.cpus - 1e-9 for o in offers),
                f"no provider offers {demand.cpus:g} CPUs (most offered: {max(o.resources.cpus for o in offers):g})",
            ),
            (
                all(o.resources.memory < demand.memory for o in offers),
                f"no provider offers {format_size(demand.memory)} of memory "
                f"(most offered: {format_size(max(o.resources.memory for o in offers))})",
            ),
            (
                all(o.resources.storage < demand.storage for o in offers),
                f"no provider offers {format_size(demand.storage)} of storage "
                f"(most offered: {format_size(max(o.resources.storage for o in offers))})",
            ),
        ]
        for key, value in demand.labels.items():
            checks.append((all(o.labels.get(key) != value for o in offers), f"no provider has the label {key}={value}"))
        for nobody, reason in checks:
            if nobody:
                return reason
        if not any(s.could_ever_fit(demand) for s in sellers):
            return "no single provider meets every constraint of the demand at once"
        able = sum(1 for s in sellers if s.could_ever_fit(demand))
        return f"every provider that could take this demand ({able}) is busy: its capacity is reserved"
