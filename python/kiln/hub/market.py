"""The market: providers' offers, requestors' demands, and the capacity reserved between them.

Pure bookkeeping, no I/O. The hub calls :meth:`Market.choose` to pick a provider for a
demand, :meth:`Market.reserve` to take its capacity, and :meth:`Market.release` to give it
back. Reserved capacity is never offered again until released, so two requestors can
never be sold the same CPUs, memory or storage, and a provider is never over-committed.

Choosing does not scan every offer: sellers are kept in the order of preference (least
loaded first), so the first that fits is usually the answer, and the holders of an image
are looked up in indexes of their own (the images its operator lets anyone run, and apart
those it loaded from the hub's store, ``Offer.cached``). A listing does not scan either:
names are kept sorted, and the providers carrying each label (and holding each image) are
indexed, so a filtered listing looks only at the providers that carry its rarest filter.

A rent is given, and reserved, the storage its container's volume will have (:func:`granted`):
:data:`~kiln.protocol.limits.DEFAULT_STORAGE` when it names none, never less than
:data:`~kiln.protocol.limits.MIN_STORAGE`; so what the market shows free is what providers'
disks may still be asked to hold.

An image from the hub's store (:mod:`kiln.hub.catalog`), which the requestor may rent, goes
first to providers that hold it (offered, or cached: loaded from the store), then to those that
can pull it (protocol 1.1, the image's architecture, room for it in their free storage) and hold
most of its layer bytes, then to the least loaded of those. Any other name goes only to the
providers that offer it (``Offer.images``), else to any (one that pulls from a registry may).

Prices (protocol 1.5): a seller has its offer's :class:`~kiln.protocol.messages.Price` (none:
free). A demand's ``max_price`` passes over every seller with a rate above the cap's (a free one
is within every cap). A rent may name, beside the providers it excludes (its deny list), those it
allows alone and the least reputation (:mod:`kiln.hub.reputation`) it accepts, and a strategy:
``least_loaded`` (the order above, the default), ``cheapest`` (the lowest worst-case cost of the
demand for the rent's expected duration, :func:`~kiln.protocol.money.worst_case`) or
``reputation`` (the highest score first). Ties go to holders of the image, then the least loaded.
``cheapest`` does not scan either: sellers are indexed by their distinct price, the distinct
prices are ordered once per (CPUs, duration) by what the demand would cost at each, and only the
sellers of the cheapest prices are looked at, least loaded first. ``reputation`` likewise walks
an index of the sellers by their distinct score, which :class:`~kiln.hub.reputation.Reputation`
keeps current (it tells the market of each change: :meth:`~kiln.hub.reputation.Reputation.watch`).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Final, NamedTuple, TypeAlias, TypeVar

from kiln.hub.catalog import Catalog, StoredImage, normalize_arch
from kiln.hub.reputation import Reputation
from kiln.protocol.errors import NoMatch
from kiln.protocol.limits import DEFAULT_STORAGE, MIN_STORAGE
from kiln.protocol.messages import Demand, Offer, Price, ProviderInfo, Resources, Strategy
from kiln.protocol.money import HOUR, format_price, within, worst_case
from kiln.protocol.outbound import covers as outbound_covers
from kiln.protocol.sizes import format_size

FEW_HOLDERS: Final = 64
"""Up to this many holders of an image are each looked at; more are met in preference order."""

K = TypeVar("K")
V = TypeVar("V")
Rank: TypeAlias = tuple[int, int, str, int]
"""A seller's place in the order of preference: (activities, -free memory, name, peer)."""
EXPECTED_DURATION: Final = 3600.0
"""Seconds a rent is expected to hold its activity when it names no ``max_duration`` (``cheapest``)."""
COST_ORDERS: Final = 256
"""Orders of the distinct prices kept, one per (CPUs, duration) asked: past that, they are made afresh."""


class PriceKey(NamedTuple):
    """A price's three rates in micro-credits, as the index keys it (a free seller's are 0)."""

    start: int
    cpu_hour: int
    env_hour: int

    @classmethod
    def of(cls, price: Price | None) -> PriceKey:
        return cls(0, 0, 0) if price is None else cls(price.start, price.cpu_hour, price.env_hour)


FREE: Final = PriceKey(0, 0, 0)


@dataclass(eq=False, slots=True)
class Seller:
    """One provider's standing offer and what is still free of it (plain numbers: checked per rent)."""

    peer: int
    name: str
    offer: Offer
    images: frozenset[str]
    cached: frozenset[str]  # images loaded from the hub's store: only a rent of a stored image matches them
    free_cpus: float
    free_memory: int
    free_storage: int
    activities: int = 0
    pulls: bool = False  # speaks protocol 1.1: can fetch an image from the hub's store
    apart: bool = False  # speaks 1.4: its images are its operator's alone (what it loaded from the store: cached)
    chains: frozenset[str] = frozenset()  # layer chains it holds, of images the store knows
    rank: Rank = field(init=False)
    price: PriceKey = field(init=False)
    score: float = 0.5  # its reputation, as the market's index by score holds it

    def __post_init__(self) -> None:
        self.rank = self._rank()
        self.price = PriceKey.of(self.offer.price)

    def _rank(self) -> Rank:
        return (self.activities, -self.free_memory, self.name, self.peer)

    def fits(self, demand: Demand) -> bool:
        """Whether what is still free meets ``demand``."""
        return self.has_free(demand) and has_labels(self.offer.labels, demand.labels)

    def could_ever_fit(self, demand: Demand) -> bool:
        """Whether the whole offer would meet ``demand`` if nothing were reserved."""
        total = self.offer.resources
        return covers(total.cpus, total.memory, total.storage, demand) and has_labels(self.offer.labels, demand.labels)

    def reaches(self, outbound: list[str]) -> bool:
        """Whether this provider's outbound policy covers every rule of ``outbound`` (1.7)."""
        return outbound_covers(self.offer.outbound, outbound)

    def can_pull(self, image: StoredImage) -> bool:
        """Whether this provider could fetch ``image`` from the store and run it (room for its layers
        extracted, not only for their tars: see :attr:`StoredImage.expanded`)."""
        return self.pulls and normalize_arch(self.offer.arch) == image.arch and self.free_storage >= image.expanded

    def has_free(self, wanted: Resources | Demand) -> bool:
        """Whether at least ``wanted`` is still free."""
        return covers(self.free_cpus, self.free_memory, self.free_storage, wanted)

    @property
    def free(self) -> Resources:
        return Resources(cpus=max(round(self.free_cpus, 6), 0.0), memory=self.free_memory, storage=self.free_storage)


@dataclass(slots=True)
class Totals:
    """Amounts summed over every seller, kept as each changes: reading them costs nothing (the hub's metrics)."""

    cpus: float = 0.0
    memory: int = 0
    storage: int = 0

    def add(self, sign: int, cpus: float, memory: int, storage: int) -> None:
        # Rounded at each step (and never -0.0), so CPUs like 0.1 leave no drift after comings and goings.
        self.cpus = round(self.cpus + sign * cpus, 9) + 0.0
        self.memory += sign * memory
        self.storage += sign * storage


def covers(cpus: float, memory: int, storage: int, wanted: Resources | Demand) -> bool:
    """Whether these amounts are at least ``wanted`` (CPUs compared with room for rounding)."""
    return cpus >= wanted.cpus - 1e-9 and memory >= wanted.memory and storage >= wanted.storage


def granted(demand: Demand) -> Demand:
    """``demand`` with the storage its activity is given: :data:`DEFAULT_STORAGE` when it names
    none, at least :data:`MIN_STORAGE` (the provider makes a volume of that size)."""
    storage = max(demand.storage or DEFAULT_STORAGE, MIN_STORAGE)
    return demand if storage == demand.storage else demand.model_copy(update={"storage": storage})


def has_labels(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in wanted.items())


class Market:
    """Offers keyed by the provider's peer id."""

    def __init__(self, catalog: Catalog | None = None, reputation: Reputation | None = None) -> None:
        self.catalog = catalog or Catalog(0)
        self.reputation = reputation or Reputation()
        self._priced: dict[PriceKey, list[Rank]] = {}  # a distinct price -> its sellers' ranks, sorted
        self._cost_orders: dict[tuple[float, float], list[list[PriceKey]]] = {}  # see _by_cost
        self._named: dict[str, int] = {}  # a provider's name -> its peer
        self._scored: dict[float, list[Rank]] = {}  # a distinct reputation -> its sellers' ranks, sorted
        self._scores: list[float] = []  # the distinct reputations of the sellers, ascending
        self.reputation.watch(self._rescore)
        self._sellers: dict[int, Seller] = {}
        self._order: list[Rank] = []  # every seller's rank, sorted: the order of preference
        self._holders: dict[str, set[int]] = {}  # image -> peers offering it (Offer.images)
        self._cached: dict[str, set[int]] = {}  # stored image's digest -> peers holding it loaded (Offer.cached)
        self._chains: dict[str, set[int]] = {}  # a chain of layers (StoredImage.chains) -> peers holding it
        self._labelled: dict[tuple[str, str], set[int]] = {}  # a label (key, value) -> peers carrying it
        self._names: list[tuple[str, int]] = []  # (name, peer) of every seller, sorted: listings by name
        self.offered_total = Totals()
        """What every seller offers, summed."""
        self.free_total = Totals()
        """What is still free of it (not reserved), summed."""

    def __contains__(self, peer: int) -> bool:
        return peer in self._sellers

    def __len__(self) -> int:
        return len(self._sellers)

    def update(self, peer: int, name: str, offer: Offer, *, pulls: bool = False, apart: bool = False) -> None:
        """Record (or replace) a provider's offer; what it already reserved stays reserved.

        ``pulls``: the provider can fetch images from the hub's store (it speaks 1.1). ``apart``:
        its ``images`` are only what its operator allows (it speaks 1.4: what it loaded from the
        store is in ``cached``); before, they may be copies of the store's images.
        """
        old = self._sellers.get(peer)
        total = offer.resources
        chains = frozenset(
            key
            for image in (*offer.images, *(offer.cached or ()))
            if (stored := self.catalog.images.get(image)) is not None
            for key, _ in stored.chain_keys
        )
        seller = Seller(
            peer,
            name,
            offer,
            frozenset(offer.images),
            frozenset(offer.cached or ()),
            total.cpus,
            total.memory,
            total.storage,
            pulls=pulls,
            apart=apart,
            chains=chains,
        )
        if old is not None:
            self.remove(peer)
            taken = old.offer.resources
            seller.free_cpus -= taken.cpus - old.free_cpus
            seller.free_memory -= taken.memory - old.free_memory
            seller.free_storage -= taken.storage - old.free_storage
            seller.activities = old.activities
            seller.rank = seller._rank()
        self._sellers[peer] = seller
        self.offered_total.add(+1, total.cpus, total.memory, total.storage)
        self.free_total.add(+1, seller.free_cpus, seller.free_memory, seller.free_storage)
        bisect.insort(self._order, seller.rank)
        bisect.insort(self._names, (name, peer))
        self._named[name] = peer
        if seller.price not in self._priced:
            self._cost_orders.clear()  # a new distinct price: every order is to be made again
        bisect.insort(self._priced.setdefault(seller.price, []), seller.rank)
        seller.score = self.reputation.score(name)
        self._index_score(seller)
        for image in seller.images:
            self._holders.setdefault(image, set()).add(peer)
        for image in seller.cached:
            self._cached.setdefault(image, set()).add(peer)
        for key in seller.chains:
            self._chains.setdefault(key, set()).add(peer)
        for label in offer.labels.items():
            self._labelled.setdefault(label, set()).add(peer)

    def price(self, peer: int) -> Price | None:
        """The price of ``peer``'s offer: what a rent placed there pays (None: free, or no such seller)."""
        seller = self._sellers.get(peer)
        return None if seller is None or seller.offer.price is None or seller.offer.price.free else seller.offer.price

    def holders(self, image: str) -> list[str]:
        """The names of the providers that hold ``image`` (offered, or cached from the store)."""
        return sorted(self._sellers[peer].name for peer in self._stored_holders(image))

    def offered(self, image: str, *, apart: bool = False) -> bool:
        """Whether a provider offers ``image`` itself (its operator allows it; not a copy of the
        store's); with ``apart``, one whose offer cannot be such a copy (:meth:`update`)."""
        holders = self._holders.get(image, set())
        return any(self._sellers[peer].apart for peer in holders) if apart else bool(holders)

    def _stored_holders(self, digest: str) -> set[int]:
        """The peers holding the stored image ``digest``: offering it, or having loaded it from the
        store (not to be changed: it may be an index's own set)."""
        offering, cached = self._holders.get(digest, set()), self._cached.get(digest, set())
        return offering | cached if offering and cached else offering or cached

    def remove(self, peer: int) -> None:
        seller = self._sellers.pop(peer, None)
        if seller is None:
            return
        total = seller.offer.resources
        self.offered_total.add(-1, total.cpus, total.memory, total.storage)
        self.free_total.add(-1, seller.free_cpus, seller.free_memory, seller.free_storage)
        del self._order[bisect.bisect_left(self._order, seller.rank)]
        del self._names[bisect.bisect_left(self._names, (seller.name, peer))]
        if self._named.get(seller.name) == peer:
            del self._named[seller.name]
        ranks = self._priced[seller.price]
        del ranks[bisect.bisect_left(ranks, seller.rank)]
        if not ranks:
            del self._priced[seller.price]
            self._cost_orders.clear()
        self._unindex_score(seller)
        _unindex(self._holders, seller.images, peer)
        _unindex(self._cached, seller.cached, peer)
        _unindex(self._chains, seller.chains, peer)
        _unindex(self._labelled, seller.offer.labels.items(), peer)

    def choose(
        self,
        image: str,
        demand: Demand,
        exclude: Collection[str] = (),
        avoid: Collection[int] = (),
        stored: StoredImage | None = None,
        *,
        root: bool = False,
        apart: bool = False,
        strategy: Strategy | None = None,
        allow: Collection[str] | None = None,
        min_reputation: float | None = None,
        seconds: float = EXPECTED_DURATION,
    ) -> tuple[int, bool]:
        """The peer id of the best provider for ``demand`` and whether it holds ``image``.

                Providers named in ``exclude``, and the peers in ``avoid``, are passed over, with
                ``root`` those whose operator does not let commands run as root, and with ``apart``
                those whose images may be copies of the store's (``image`` names a stored image the
                requestor may not see: only an operator's own copy of it may run). Of the
                rest, those holding the image come first, then the least loaded (fewest activities,
                most free memory). Raises :class:`~kiln.protocol.errors.NoMatch` naming what nobody
                offers, or saying that all are busy. The storage compared is what the rent is
        :func:`granted` (the default when it names none).

                Only sellers whose price is within ``demand.max_price``, named in ``allow`` (when given)
                and with a reputation of at least ``min_reputation`` (when given) are picked. ``strategy``
                orders the rest (see the module's docstring); ``cheapest`` compares the worst case of the
                demand held ``seconds`` (the rent's ``max_duration``, else :data:`EXPECTED_DURATION`).
        """
        demand = granted(demand)
        cap = demand.max_price
        score = self.reputation.score
        allow = None if allow is None else frozenset(allow)
        outbound = demand.outbound

        def able(seller: Seller) -> bool:
            return (
                seller.fits(demand)
                and seller.peer not in avoid
                and seller.name not in exclude
                and (seller.offer.root or not root)
                and (seller.apart or not apart)
                and (cap is None or within(seller.price, cap))
                and (allow is None or seller.name in allow)
                and (min_reputation is None or score(seller.name) >= min_reputation - 1e-9)
                and (not outbound or seller.reaches(outbound))
            )

        def why() -> str:
            return self._why_not(demand, exclude, avoid, stored, root=root, allow=allow, least=min_reputation)

        if allow is not None or strategy in ("cheapest", "reputation"):
            found = self._choose_ranked(image, stored, demand, able, strategy, allow, seconds)
            if found is None:
                raise NoMatch(why())
            return found
        if stored is not None:
            return self._choose_stored(stored, demand, able, why)
        return self._choose_named(image, demand, able, why)

    def _choose_ranked(
        self,
        image: str,
        stored: StoredImage | None,
        demand: Demand,
        able: Callable[[Seller], bool],
        strategy: Strategy | None,
        allow: Collection[str] | None,
        seconds: float,
    ) -> tuple[int, bool] | None:
        """The best by ``strategy`` (of ``allow`` alone, when given): the groups of equal cost or
        score in order; in the first group with an able seller, a holder of the image first, then
        the least loaded (a stored image only on a seller that holds it or can pull it)."""
        holders = self._stored_holders(stored.digest) if stored is not None else self._holders.get(image, set())

        def holds(seller: Seller) -> bool:
            return seller.peer in holders

        def ok(seller: Seller) -> bool:
            return able(seller) and (stored is None or holds(seller) or seller.can_pull(stored))

        for group in self._groups(demand, strategy, allow, seconds):
            if len(holders) <= FEW_HOLDERS:
                # Few hold the image: look at those of this group alone, then the group in order.
                held = [s for s in map(self._sellers.__getitem__, holders) if _has(group, s.rank) and ok(s)]
                if held:
                    return min(held, key=lambda s: s.rank).peer, True
                first = next((s for s in self._ranked(group) if ok(s)), None)
                if first is not None:
                    return first.peer, False
                continue
            first = None
            for s in self._ranked(group):
                if ok(s):
                    if holds(s):
                        return s.peer, True
                    first = first or s
            if first is not None:
                return first.peer, False
        return None

    def _ranked(self, ranks: Iterable[Rank]) -> Iterator[Seller]:
        for rank in ranks:
            yield self._sellers[rank[-1]]

    def _groups(
        self, demand: Demand, strategy: Strategy | None, allow: Collection[str] | None, seconds: float
    ) -> Iterator[list[Rank]]:
        """The sellers' ranks in groups of equal standing by ``strategy``, best group first, each sorted."""
        if allow is not None:
            sellers = [self._sellers[peer] for name in set(allow) if (peer := self._named.get(name)) is not None]
            keyed: list[tuple[float, Rank]]
            if strategy == "cheapest":
                keyed = sorted((worst_case(s.price, demand.cpus, seconds), s.rank) for s in sellers)
            elif strategy == "reputation":
                keyed = sorted((-self.reputation.score(s.name), s.rank) for s in sellers)
            else:
                keyed = sorted((0, s.rank) for s in sellers)
            for _, ranks in _grouped(keyed):
                yield ranks
        elif strategy == "cheapest":
            cap = demand.max_price
            for keys in self._by_cost(demand.cpus, seconds):
                keys = [key for key in keys if cap is None or within(key, cap)]
                if len(keys) == 1:
                    yield self._priced[keys[0]]
                elif keys:
                    yield list(heapq.merge(*(self._priced[key] for key in keys)))
        else:  # reputation: the distinct scores, best first, each with its sellers in order
            for score in reversed(self._scores):
                yield self._scored[score]

    def _by_cost(self, cpus: float, seconds: float) -> list[list[PriceKey]]:
        """The distinct prices in groups of equal worst case for ``cpus`` held ``seconds``, cheapest
        first: made once per (cpus, seconds) until a distinct price comes or goes."""
        order = self._cost_orders.get((cpus, seconds))
        if order is None:
            if len(self._cost_orders) >= COST_ORDERS:
                self._cost_orders.clear()
            keys = list(self._priced)
            costs = _worst_cases(keys, cpus, seconds)
            order = []
            last = None
            for at in sorted(range(len(keys)), key=costs.__getitem__):
                if order and costs[at] == last:
                    order[-1].append(keys[at])
                else:
                    order.append([keys[at]])
                    last = costs[at]
            self._cost_orders[(cpus, seconds)] = order
        return order

    def _choose_named(
        self,
        image: str,
        demand: Demand,
        able: Callable[[Seller], bool],
        why: Callable[[], str],
    ) -> tuple[int, bool]:
        """A holder of ``image`` (a name the store does not know); else the first able provider."""
        holders = self._holders.get(image, set())
        if len(holders) <= FEW_HOLDERS:
            fitting = [self._sellers[peer] for peer in holders if able(self._sellers[peer])]
            if fitting:
                return min(fitting, key=lambda s: s.rank).peer, True
            for seller in self._in_order():
                if able(seller):
                    return seller.peer, False
        else:
            first_able: Seller | None = None
            for seller in self._in_order():
                if able(seller):
                    if image in seller.images:
                        return seller.peer, True
                    first_able = first_able or seller
            if first_able is not None:
                return first_able.peer, False
        raise NoMatch(why())

    def _choose_stored(
        self,
        image: StoredImage,
        demand: Demand,
        able: Callable[[Seller], bool],
        why: Callable[[], str],
    ) -> tuple[int, bool]:
        """A holder of the stored ``image``; else the provider that can pull it holding most of its layers."""
        best = self._best(self._stored_holders(image.digest), able)
        if best is not None:
            return best.peer, True

        def pulls(seller: Seller) -> bool:
            return able(seller) and seller.can_pull(image)

        for key, _ in reversed(image.chain_keys):
            best = self._best(self._chains.get(key, set()), pulls)
            if best is not None:
                return best.peer, False
        for seller in self._in_order():
            if pulls(seller):
                return seller.peer, False
        raise NoMatch(why())

    def _best(self, peers: set[int], ok: Callable[[Seller], bool]) -> Seller | None:
        """The first in preference order of ``peers`` that is ``ok``."""
        if len(peers) <= FEW_HOLDERS:
            return min((s for s in map(self._sellers.__getitem__, peers) if ok(s)), key=lambda s: s.rank, default=None)
        return next((s for s in self._in_order() if s.peer in peers and ok(s)), None)

    def reserve(self, peer: int, resources: Resources) -> None:
        self._adjust(peer, -1, resources)

    def release(self, peer: int, resources: Resources) -> None:
        self._adjust(peer, +1, resources)

    def held_elsewhere(self, peer: int, before: Resources, now: Resources) -> None:
        """What other hubs of the database hold of ``peer`` went from ``before`` to ``now``: not this
        hub's to sell (nor its activities to count)."""
        self._adjust(peer, +1, before, count=False)
        self._adjust(peer, -1, now, count=False)

    def _adjust(self, peer: int, sign: int, resources: Resources, *, count: bool = True) -> None:
        seller = self._sellers.get(peer)
        if seller is None:
            return
        del self._order[bisect.bisect_left(self._order, seller.rank)]
        ranks = self._priced[seller.price]
        del ranks[bisect.bisect_left(ranks, seller.rank)]
        self._unindex_score(seller)
        total = seller.offer.resources
        self.free_total.add(-1, seller.free_cpus, seller.free_memory, seller.free_storage)
        seller.free_cpus = min(seller.free_cpus + sign * resources.cpus, total.cpus)
        seller.free_memory = min(seller.free_memory + sign * resources.memory, total.memory)
        seller.free_storage = min(seller.free_storage + sign * resources.storage, total.storage)
        self.free_total.add(+1, seller.free_cpus, seller.free_memory, seller.free_storage)
        if count:
            seller.activities = max(seller.activities - sign, 0)
        seller.rank = seller._rank()
        bisect.insort(self._order, seller.rank)
        bisect.insort(ranks, seller.rank)
        self._index_score(seller)

    def _index_score(self, seller: Seller) -> None:
        ranks = self._scored.get(seller.score)
        if ranks is None:
            ranks = self._scored[seller.score] = []
            bisect.insort(self._scores, seller.score)
        bisect.insort(ranks, seller.rank)

    def _unindex_score(self, seller: Seller) -> None:
        ranks = self._scored[seller.score]
        del ranks[bisect.bisect_left(ranks, seller.rank)]
        if not ranks:
            del self._scored[seller.score]
            del self._scores[bisect.bisect_left(self._scores, seller.score)]

    def _rescore(self, name: str, score: float) -> None:
        """The reputation of ``name`` changed: its seller moves in the index by score."""
        peer = self._named.get(name)
        seller = self._sellers.get(peer) if peer is not None else None
        if seller is None or seller.score == score:
            return
        self._unindex_score(seller)
        seller.score = score
        self._index_score(seller)

    def _in_order(self) -> Iterator[Seller]:
        for rank in self._order:
            yield self._sellers[rank[-1]]

    def describe(
        self,
        *,
        image: str | None = None,
        labels: dict[str, str] | None = None,
        free: Resources | None = None,
        limit: int | None = None,
        stored: bool = False,
        hidden: Callable[[str], bool] = lambda image: False,
    ) -> tuple[list[ProviderInfo], int]:
        """The providers that hold ``image``, carry ``labels`` and have ``free`` left, the first
        ``limit`` by name; and how many match in all. With ``stored`` (``image`` is the digest of
        a stored image the asker may rent), those that loaded it from the store hold it too.
        What ``hidden`` says the asker may not see (stored images of others) is listed, and
        held, only by providers whose images are their operators' own (see :meth:`update`).

        Only the providers in the smallest index that applies (the image's holders, a
        label's carriers) are looked at; with no filter, none are (names are kept sorted).
        """
        labels = labels or {}
        free = free if free is not None and (free.cpus > 0 or free.memory > 0 or free.storage > 0) else None
        indexes = [self._labelled.get(label, set()) for label in labels.items()]
        holding = (self._stored_holders(image) if stored else self._holders.get(image, set())) if image else set()
        if image is not None:
            indexes.append(holding)
        if not indexes and free is None:
            shown = [self._sellers[peer] for _, peer in self._names[: limit or len(self._names)]]
            matching_count = len(self._names)
        else:
            candidates = min(indexes, key=len) if indexes else self._sellers.keys()
            matching = [
                s
                for s in map(self._sellers.__getitem__, candidates)
                if (image is None or s.peer in holding)
                and (image is None or s.apart or not hidden(image))
                and has_labels(s.offer.labels, labels)
                and (free is None or s.has_free(free))
            ]
            shown = heapq.nsmallest(limit or len(matching), matching, key=lambda s: s.name)
            matching_count = len(matching)
        infos = [
            ProviderInfo(
                name=s.name,
                arch=s.offer.arch,
                labels=s.offer.labels,
                images=sorted(s.images if s.apart else (i for i in s.images if not hidden(i))),
                offered=s.offer.resources,
                free=s.free,
                activities=s.activities,
                price=s.offer.price,
                reputation=round(self.reputation.score(s.name), 4),
                outbound=s.offer.outbound,
            )
            for s in shown
        ]
        return infos, matching_count

    def _why_not(
        self,
        demand: Demand,
        exclude: Collection[str],
        avoid: Collection[int],
        image: StoredImage | None = None,
        *,
        root: bool = False,
        allow: Collection[str] | None = None,
        least: float | None = None,
    ) -> str:
        if not self._sellers:
            return "no provider is connected to the hub"
        sellers = [s for s in self._sellers.values() if s.name not in exclude and s.peer not in avoid]
        if not sellers:
            return f"every connected provider ({len(self._sellers)}) is excluded by the request or already in its group"
        # What narrowed the providers before the demand's resources are weighed: the reasons
        # below say so ("no provider within the max_price ... offers 2 CPUs"), not of every provider.
        among: list[str] = []
        if allow is not None:
            allowed = [s for s in sellers if s.name in allow]
            if len(allowed) < len(sellers):
                among.append("the rent allows")
            sellers = allowed
            if not sellers:
                named = ", ".join(sorted(allow)[:5])
                return f"none of the providers the rent allows ({named}) is connected and not excluded"
        if least is not None:
            best = max(self.reputation.score(s.name) for s in sellers)
            reputed = [s for s in sellers if self.reputation.score(s.name) >= least - 1e-9]
            if len(reputed) < len(sellers):
                among.append(f"with a reputation of at least {least:g}")
            sellers = reputed
            if not sellers:
                return f"no provider has a reputation of at least {least:g} (the best has {best:.3f})"
        cap = demand.max_price
        if cap is not None:
            cheapest = min(sellers, key=lambda s: s.price)
            priced = [s for s in sellers if within(s.price, cap)]
            if len(priced) < len(sellers):
                among.append(f"within the demand's max_price {format_price(cap)}")
            sellers = priced
            if not sellers:
                return (
                    f"no provider's price is within the demand's max_price {format_price(cap)} "
                    f"(the cheapest asks {format_price(cheapest.price)})"
                )
        if root:
            sellers = [s for s in sellers if s.offer.root]
            if not sellers:
                return "no provider lets commands run as root (its operator allows it with --allow-root)"
        if demand.outbound:
            reaching = [s for s in sellers if s.reaches(demand.outbound)]
            if not reaching:
                asked = ", ".join(demand.outbound[:5]) + (", …" if len(demand.outbound) > 5 else "")
                return (
                    f"no provider's outbound policy covers the demand's outbound access ({asked}); "
                    "its operator allows sites with --outbound"
                )
            if len(reaching) < len(sellers):
                among.append("whose outbound policy covers the demand's")
            sellers = reaching
        if image is not None:
            holders = self._stored_holders(image.digest)
            if not any(s.peer in holders for s in sellers):
                why = _why_cannot_pull(image, sellers)
                if why is not None:
                    return why
                sellers = [s for s in sellers if s.can_pull(image)]
        offers = [s.offer for s in sellers]
        most_storage = format_size(max(o.resources.storage for o in offers))
        if demand.storage == DEFAULT_STORAGE:  # the rent may have named none: say what it was given
            most_storage += f"; a rent that names no storage is given {format_size(DEFAULT_STORAGE)}"
        nobody = f"no provider {', '.join(among)}" if among else "no provider"
        checks = [
            (
                all(o.resources.cpus < demand.cpus - 1e-9 for o in offers),
                f"{nobody} offers {demand.cpus:g} CPUs (most offered: {max(o.resources.cpus for o in offers):g})",
            ),
            (
                all(o.resources.memory < demand.memory for o in offers),
                f"{nobody} offers {format_size(demand.memory)} of memory "
                f"(most offered: {format_size(max(o.resources.memory for o in offers))})",
            ),
            (
                all(o.resources.storage < demand.storage for o in offers),
                f"{nobody} offers {format_size(demand.storage)} of storage (most offered: {most_storage})",
            ),
        ]
        for key, value in demand.labels.items():
            checks.append((all(o.labels.get(key) != value for o in offers), f"{nobody} has the label {key}={value}"))
        for failed, reason in checks:
            if failed:
                return reason
        able = sum(1 for s in sellers if s.could_ever_fit(demand))
        if not able:
            return "no single provider meets every constraint of the demand at once"
        return f"every provider that could take this demand ({able}) is busy: its capacity is reserved"


def _grouped(keyed: list[tuple[K, V]]) -> Iterator[tuple[K, list[V]]]:
    """``keyed`` (sorted by key) in runs of equal key."""
    for key, run in itertools.groupby(keyed, key=lambda pair: pair[0]):
        yield key, [rank for _, rank in run]


def _worst_cases(keys: Iterable[PriceKey], cpus: float, seconds: float) -> list[int]:
    """:func:`~kiln.protocol.money.worst_case` of each price in ``keys``, exactly, in integers: a
    rent naming a new (CPUs, duration) costs the hub one pass of integer arithmetic over the
    distinct prices, not a Fraction's arithmetic per price (ten times slower)."""
    a, b = Fraction(cpus).as_integer_ratio()
    c, d = Fraction(seconds).as_integer_ratio()
    den = b * d * HOUR
    return [key.start + -(-((key.cpu_hour * a + key.env_hour * b) * c) // den) for key in keys]


def _has(ranks: list[Rank], rank: Rank) -> bool:
    """Whether the sorted ``ranks`` hold ``rank``."""
    at = bisect.bisect_left(ranks, rank)
    return at < len(ranks) and ranks[at] == rank


def _unindex(index: dict[K, set[int]], keys: Iterable[K], peer: int) -> None:
    """Take ``peer`` out of ``index`` under each of ``keys`` (a key left with no peer goes)."""
    for key in keys:
        peers = index[key]
        peers.discard(peer)
        if not peers:
            del index[key]


def _why_cannot_pull(image: StoredImage, sellers: list[Seller]) -> str | None:
    """Why none of ``sellers`` could fetch ``image``, if none could; None if some could."""
    if any(s.can_pull(image) for s in sellers):
        return None
    name = f"image {image.digest[:19]} ({image.os}/{image.arch}, {format_size(image.expanded)} extracted)"
    if not any(s.pulls for s in sellers):
        return f"no provider holds {name}, and none speaks protocol 1.1 to fetch it from the hub"
    arches = sorted({normalize_arch(s.offer.arch) for s in sellers if s.pulls})
    if image.arch not in arches:
        return f"no provider can run {name}: the providers are {', '.join(arches)}"
    most = max(s.free_storage for s in sellers if s.pulls and normalize_arch(s.offer.arch) == image.arch)
    return f"no provider has room for {name} (most free storage: {format_size(most)})"
