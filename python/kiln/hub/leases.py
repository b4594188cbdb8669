"""Leases: renting an activity on a provider the market picks, listing the market and the
activities, and destroying an activity (its capacity freed once its container is gone).

A layer of :class:`~kiln.hub.core.HubCore` (see :mod:`kiln.hub.base`).
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from kiln.hub.base import CoreBase, credential_id
from kiln.hub.catalog import Tenant, is_digest
from kiln.hub.ledger import Meter, Refusal, requestor_account
from kiln.hub.market import EXPECTED_DURATION, granted
from kiln.hub.peers import Lease, Peer, Pending
from kiln.hub.records import Destroying, SaveBudget
from kiln.protocol.codes import ErrorCode
from kiln.protocol.errors import NoMatch
from kiln.protocol.messages import (
    MAX_TEXT,
    ActivitiesQuery,
    ActivityInfo,
    ActivityList,
    Create,
    Destroy,
    MarketInfo,
    MarketQuery,
    Rent,
    Resources,
    clip,
)
from kiln.protocol.money import is_free

RESERVE_TRIES: Final = 3
"""Providers a rent tries before it fails when other hubs of the database sold each one it chose
(:meth:`kiln.hub.cluster.Cluster.reserve`): the view a hub matches on is a moment behind theirs."""


class Leases(CoreBase):
    """Renting, listing and destroying activities."""

    def _describe(self, p: Peer, message: MarketQuery) -> None:
        """The market as requestor ``p``'s tenant may see it (the rules are :mod:`kiln.hub.core`'s)."""
        tenant = Tenant.of(p.credential)
        image = message.image
        # A tag of the store names the image by its id, as providers offer it. A stored image
        # the tenant may not see is as if not stored: held only by providers that offer it themselves.
        stored = self.catalog.resolve(image, tenant) if image is not None else None
        image = stored.digest if stored is not None else image
        providers, matched = self.market.describe(
            image=image,
            labels=message.labels,
            free=message.free,
            limit=message.limit,
            stored=stored is not None,
            hidden=lambda i: self.catalog.hidden(i, tenant),
        )
        if p.minor < 5:  # prices and reputations are 1.5's: an older requestor is sent what it knows
            providers = [info.model_copy(update={"price": None, "reputation": None}) for info in providers]
        if p.minor < 7:  # outbound policies are 1.7's
            providers = [info.model_copy(update={"outbound": None}) for info in providers]
        info = MarketInfo(
            type="market_info", re=message.id, providers=providers, matched=matched, activities=len(self.activities)
        )
        self._send(p.id, info)

    def _list_activities(self, p: Peer, message: ActivitiesQuery) -> None:
        """Requestor ``p``'s own activities, or with ``all`` every one at the hub: an admin's view only."""
        if message.all and (p.credential is None or p.credential.role != "admin"):
            text = "listing every activity at the hub needs an admin credential (kiln token create --role admin)"
            self._error(p, message.id, ErrorCode.UNAUTHORIZED, text)
            return
        leases = [self.activities[key] for key in sorted(self.activities)] if message.all else self._leases(p)
        listed = self._fitting(
            ActivityInfo(
                id=lease.id,
                requestor=lease.requestor_name,
                credential=lease.credential,
                provider=lease.provider_name,
                state=lease.state,
                resources=lease.resources,
                group=lease.group,
                started=lease.started or None,
                image=lease.image or lease.named_image,
            )
            for lease in leases[: message.limit]
        )
        self._send(p.id, ActivityList(type="activity_list", re=message.id, activities=listed, matched=len(leases)))

    def _rent(self, p: Peer, message: Rent) -> None:
        since = self._monotonic()
        if len(p.activities) >= self.max_activities:
            text = f"more than {self.max_activities} activities held at once: release some first"
            self._rent_failed(p, message, ErrorCode.TOO_MANY, text, since)
            return
        group = p.groups.get(message.group) if message.group is not None else None
        tenant = Tenant.of(p.credential)
        stored = self.catalog.resolve(message.image, tenant)
        # Another tenant's image runs only from a provider that offers it itself (whose offer
        # cannot be a copy of the store's): the same answers whether that tenant stored it or not.
        hidden = self.catalog.hidden(message.image, tenant)
        if stored is None and is_digest(message.image) and not self.market.offered(message.image, apart=hidden):
            # A digest names the image only the store (as this tenant sees it) or a provider's own
            # offer can run.
            self._rent_failed(p, message, ErrorCode.IMAGE_NOT_FOUND, not_found(message.image), since)
            return
        d = granted(message.demand)  # the storage its volume will have: reserved, and sent to the provider
        resources = Resources(cpus=d.cpus, memory=d.memory, storage=d.storage)
        activity_id = self._new_activity_id()
        excluded = set(message.exclude)
        for taken in range(RESERVE_TRIES):  # how many the database refused so far
            try:
                provider, cached = self.market.choose(
                    message.image,
                    message.demand,
                    excluded,
                    group or (),
                    stored,
                    root=message.user == "root",
                    apart=hidden,
                    strategy=message.strategy,
                    allow=message.allow,
                    min_reputation=message.min_reputation,
                    seconds=message.max_duration or EXPECTED_DURATION,
                )
            except NoMatch as e:
                text = e.message if not taken else f"{taken} providers that matched were sold by other hubs meanwhile"
                self._rent_failed(p, message, e.code, text, since)
                return
            q = self.peers[provider]
            # Several hubs sell each provider: the database decides who has its capacity.
            if self.cluster is None or self.cluster.reserve(activity_id, p.session, q.name, resources):
                break
            excluded.add(q.name)  # sold by another hub meanwhile: this hub's view of it is behind
        else:
            text = f"{RESERVE_TRIES} providers that matched were sold by other hubs meanwhile"
            self._rent_failed(p, message, ErrorCode.NO_MATCH, text, since)
            return
        if self._priced(q):  # held before anything starts
            refusal = self._hold(p, message, q, activity_id, resources.cpus)
            if refusal is not None:
                self._rent_failed(p, message, refusal.code, refusal.message, since)
                return
        activity = Lease(
            activity_id,
            p.id,
            provider,
            resources,
            cached,
            message.group,
            provider_name=q.name,
            requestor_name=p.name,
            credential=credential_id(p),
        )
        activity.max_duration = message.max_duration
        if stored is not None:
            activity.image = stored.digest
            self.catalog.use(stored.digest, self._clock())
        else:
            activity.named_image = message.image
        self.market.reserve(provider, resources)
        if message.group is not None:
            p.groups.setdefault(message.group, Counter())[provider] += 1
            self.jobs.rented(p.session, message.group, credential_id(p), p.name, self._clock())
        self.activities[activity.id] = activity
        p.activities.add(activity.id)
        q.activities.add(activity.id)
        hub_id = q.new_id()
        pending = Pending("create", activity.id, p.id, message.id, stored=stored, image=message.image, asked=since)
        q.pending[hub_id] = pending
        self.deadlines.due(pending, q.id, hub_id, self.create_timeout)
        p.open[message.id] = (provider, hub_id)
        create = Create(
            type="create",
            id=hub_id,
            activity=activity.id,
            image=message.image,
            resources=resources,
            user=message.user,
            outbound=message.demand.outbound,
        )
        if stored is not None:
            manifest = stored.manifest_for(q.minor) if q.minor >= 1 else None
            create = create.model_copy(update={"image": stored.digest, "manifest": manifest})
        self._send(provider, create)

    def _rent_failed(self, p: Peer, message: Rent, code: ErrorCode, text: str, since: float) -> None:
        """Answer requestor ``p``'s rent (which came at ``since``, the monotonic clock) with an error."""
        self._error(p, message.id, code, text)
        self._rent_answered(code, since)

    def _priced(self, q: Peer) -> bool:
        """Whether a rent on provider ``q`` is held and charged: the hub keeps accounts, admits
        only by credentials, and ``q`` is not free (an open hub lists prices, charges nothing)."""
        return (
            self.ledger.accounts is not None
            and self.credentials is not None
            and self.credentials.required()
            and not is_free(q.price)
        )

    def _hold(self, p: Peer, message: Rent, q: Peer, activity: str, cpus: float) -> Refusal | None:
        """Hold the worst case of the rent on ``q`` for requestor ``p`` (its group's budget set by
        the group's first rent), or say why it cannot be held."""
        if p.credential is None:
            return Refusal(ErrorCode.INSUFFICIENT_FUNDS, "no account: join with a requestor credential")
        assert q.price is not None
        group = message.group
        if (
            group is not None
            and message.budget is not None
            and self.ledger.set_budget(p.session, group, message.budget)
        ):
            self._out.append(SaveBudget(p.session, group, message.budget))
        account = requestor_account(p.credential.id)
        meter = Meter(activity, account, q.name, q.price, cpus, message.max_duration, p.session, group)
        held = self.ledger.open(meter, self._clock())
        if isinstance(held, Refusal):
            return held
        if self.cluster is None:
            self._out.append(held)
        elif self.cluster.hold(held):  # several hubs hold from one balance: the database decides
            self.ledger.written(held)
        else:
            self.ledger.withdraw(meter, held)
            return Refusal(ErrorCode.INSUFFICIENT_FUNDS, f"{account} has not enough left: other hubs held it first")
        return None

    def _destroy(self, activity: Lease, requestor: int | None, r_id: int | None, *, cancelled: bool = False) -> None:
        self._log("info", f"activity {activity.id}: destroying")
        activity.state = "destroying"
        if activity.saved:
            self._out.append(Destroying(activity.id))
        q = self.peers[activity.provider]
        hub_id = self._send_destroy(q, activity.id, requestor, r_id, cancelled=cancelled)
        owner = self.peers.get(requestor) if requestor is not None else None
        if owner is not None and r_id is not None:
            owner.open[r_id] = (q.id, hub_id)

    def _send_destroy(
        self, q: Peer, activity: str, requestor: int | None, r_id: int | None, *, cancelled: bool = False
    ) -> int:
        """Ask provider ``q`` to destroy ``activity``, within the destroy timeout; returns the hub's request id."""
        hub_id = q.new_id()
        q.pending[hub_id] = Pending("destroy", activity, requestor, r_id, cancelled=cancelled)
        self.deadlines.due(q.pending[hub_id], q.id, hub_id, self.destroy_timeout)
        self._send(q.id, Destroy(type="destroy", id=hub_id, activity=activity))
        return hub_id

    def _drop_activity(self, activity: Lease, cpu_seconds: float | None = None) -> None:
        self._log("info", f"activity {activity.id} ended; its capacity is free")
        self.activities.pop(activity.id, None)
        self._ended(activity, cpu_seconds)
        self.market.release(activity.provider, activity.resources)
        self._ungroup(activity)
        if activity.image is not None:
            self.catalog.unuse(activity.image)
        for peer in (activity.requestor, activity.provider):
            q = self.peers.get(peer)
            if q is not None:
                q.activities.discard(activity.id)

    def _ungroup(self, activity: Lease) -> None:
        """The lease no longer keeps its group off its provider."""
        owner = self.peers.get(activity.requestor)
        name = activity.group
        group = owner.groups.get(name) if name is not None and owner is not None else None
        if owner is None or name is None or group is None or activity.provider not in group:
            return
        group[activity.provider] -= 1
        if group[activity.provider] <= 0:
            del group[activity.provider]
            if not group:
                del owner.groups[name]


def not_stored(told: str, image: str) -> str:
    """A provider's ``image_not_found`` for an image the hub's store lacks too, with what the
    requestor can do about it (the provider's own text says what its operator could)."""
    hint = (
        f"; the hub's image store does not hold {image!r} either: push it there (kiln image push {image}, "
        "or push_image / pushImage in code), then rent it again"
    )
    return clip(told, MAX_TEXT - len(hint)) + hint


def not_found(image: str) -> str:
    """Why a rent of ``image``, a digest, finds nothing: neither the store (as the requestor sees
    it) nor any provider's offer holds it."""
    return (
        f"the hub's image store holds no image {image!r} for you, and no provider offers it: push it "
        "(kiln image push, or push_image / pushImage in code), or ask its owner to share it (kiln image share)"
    )
