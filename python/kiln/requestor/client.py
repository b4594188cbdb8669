"""The requestor: connect to a hub, rent activities from the market, release them.

::

    async with kiln.connect("ws://127.0.0.1:7465") as requestor:
        async with requestor.rent("kiln-busybox:latest", kiln.Demand(cpus=1, memory="256MiB")) as act:
            ...

    requestor = await kiln.connect("ws://127.0.0.1:7465")    # or without a block:
    try:
        ...
    finally:
        await requestor.close()

Leaving ``connect`` (or ``close()``) releases every activity still held. If the connection drops, the
requestor dials again (protocol 1.2) for as long as the hub holds its activities (the
``grace`` its welcome announced, ``kiln hub --grace``): requests under way fail with
:class:`~kiln.ConnectionLost`, the activities the hub kept go on working, and those it did
not are marked ``lost``. When no reconnect succeeds in time, every activity is lost.

A market of several hubs (on one database) is given as a list, or as one string with
commas: the requestor joins the first that answers, and when its hub dies it dials that one
first, then each other in turn (:class:`~kiln.connection.HubRing`); ``requestor.url`` says
which hub it is on::

    async with kiln.connect(["ws://hub-a:7465", "ws://hub-b:7465"]) as requestor:   # or "ws://hub-a:7465,ws://hub-b:7465"
        ...

Images the providers lack can go through the hub's store (protocol 1.1)::

    pushed = await requestor.push_image("wordcount:1")        # docker save, then push
    pushed = await requestor.push_image(path="wordcount.tar")  # or a saved archive
    await requestor.map(worker, items, image="wordcount:1")   # providers load it from the hub
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeVar, Unpack

from kiln.connection import Connection, HubRing, Trust, tls_options
from kiln.protocol.errors import (
    ConnectionClosed,
    ConnectionLost,
    KilnError,
    LocalProtocolError,
    NoMatch,
    UsageError,
    error_from_code,
)
from kiln.protocol.messages import (
    MAX_LISTED,
    MAX_REASON,
    MAX_TASK_ATTEMPT,
    ActivitiesQuery,
    ActivityInfo,
    ActivityList,
    ActivityLost,
    BalanceInfo,
    BalanceQuery,
    Cost,
    Demand,
    Done,
    ImageList,
    LedgerList,
    LedgerQuery,
    ListImages,
    MarketInfo,
    MarketQuery,
    Message,
    ProviderInfo,
    RemoveImage,
    Rent,
    Rented,
    RentProgress,
    Resources,
    ShareImage,
    TaskReport,
    TaskState,
    User,
    VerdictReport,
    clip,
)
from kiln.protocol.money import MICRO, within, worst_case
from kiln.protocol.session import Event, Interim, Notified, State
from kiln.requestor.activity import Activity
from kiln.requestor.executor import Job, JobOptions, RentProgressHandler, Worker
from kiln.requestor.images import PushedImage, PushProgress, push_archive, push_engine_image, read_archive
from kiln.requestor.progress import ProgressView
from kiln.requestor.service import EventHandler as ServiceEventHandler
from kiln.requestor.service import Health, Restart, Service, Setup
from kiln.requestor.terms import Terms, market_terms

T = TypeVar("T")
R = TypeVar("R")

ABANDON_TIMEOUT = 15.0
REDIAL_FIRST: Final = 0.2
REDIAL_MOST: Final = 2.0
"""Seconds between two dials of a reconnect: from the first, doubling up to the most."""
TASK_REPORTS: Final = 6
"""The minor version from which a hub takes ``task`` reports."""
ENDED_KEPT: Final = 1024
"""Activities released or lost that a requestor still knows, for the hub's final ``cost`` of each."""

log = logging.getLogger("kiln.requestor")

Dial = Callable[[str, str], Awaitable[Connection]]
"""Dial the hub at this URL again, resuming the session of this secret (``hello.resume``)."""


@dataclass(frozen=True, slots=True)
class Balance:
    """A requestor's account at the hub (:meth:`Requestor.balance`): in credits, and in micro-credits."""

    account: str
    available: float
    held: float
    spent: float
    available_micro: int
    held_micro: int
    spent_micro: int

    @classmethod
    def of(cls, info: BalanceInfo) -> Balance:
        a, h, s = info.available, info.held, info.spent
        return cls(info.account, a / MICRO, h / MICRO, s / MICRO, a, h, s)


class Requestor:
    """A live connection to the hub as a requestor. Get one from :func:`connect`.

    ``conn`` is a connection to ``hubs.current``. With ``dial``, a connection that drops is
    dialled again, to the hubs of ``hubs`` in its order (see the module's docstring).
    """

    def __init__(self, conn: Connection, hubs: HubRing, dial: Dial | None = None, *, name: str = "requestor") -> None:
        self._conn = conn
        self._hubs = hubs
        self._dial = dial
        self._activities: dict[str, Activity] = {}
        self._ended: OrderedDict[str, Activity] = OrderedDict()  # the latest ENDED_KEPT ended ones
        self._up = asyncio.Event()  # clear while dialling again
        self._up.set()
        self._closing = False
        self.gone: ConnectionClosed | None = None
        """Why this requestor has no connection for good (closed, or no reconnect in time); None while it has."""
        conn.on_event = self._on_event
        # Owned here: awaited by close(), which every way out of connect() comes to.
        self._reader: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(
            self._read(), name=f"kiln-reader-{name}"
        )

    @property
    def connection(self) -> Connection:
        """The connection of the moment (a reconnect replaces it)."""
        return self._conn

    @property
    def url(self) -> str:
        """The URL of the hub this requestor is on (while it reconnects, the one it was on)."""
        return self._hubs.current

    @property
    def reconnecting(self) -> bool:
        """Whether the connection dropped and is being dialled again."""
        return not self._up.is_set()

    async def connected(self) -> Connection:
        """The connection to use now: once a reconnect under way is over. Raises
        :class:`~kiln.ConnectionLost` when it failed (or ConnectionClosed once closed)."""
        await self._up.wait()
        if self.gone is not None:
            raise self.gone
        return self._conn

    async def reconnected(self) -> bool:
        """Wait out a reconnect: True when the connection is back, False when it is gone for good."""
        await self._up.wait()
        return self.gone is None

    async def _read(self) -> None:
        """Read from the hub, dialling again when the connection drops, until closed or gone for good.

        Started when the requestor is made, awaited by :meth:`close`.
        """
        while True:
            await self._conn.run()
            welcome = self._conn.session.welcome
            lost = self._conn.session.closed
            assert welcome is not None and isinstance(lost, ConnectionClosed)
            if self._closing or self._dial is None or welcome.resume is None or not welcome.grace:
                self.gone = lost
                return
            self._up.clear()
            try:
                conn = await self._redial(welcome.resume, welcome.grace, lost)
            except ConnectionLost as e:
                self.gone = e
                for activity in self._activities.values():
                    activity.lost = e
                self._activities.clear()
                self._up.set()
                return
            self._take_over(conn)

    async def _redial(self, secret: str, grace: float, lost: ConnectionClosed) -> Connection:
        """Dial the hubs in rounds (the one it was on first, then the others) until one answers,
        waiting between two rounds, for up to ``grace`` seconds."""
        assert self._dial is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        delay = REDIAL_FIRST
        hubs = "the hub" if len(self._hubs.urls) == 1 else f"the {len(self._hubs.urls)} hubs"
        log.warning("%s; dialling %s again for up to %g s", lost.message, hubs, grace)
        while True:
            for url in self._hubs.order():
                try:
                    async with asyncio.timeout(max(deadline - loop.time(), 0.1)):
                        conn = await self._dial(url, secret)
                except (ConnectionLost, TimeoutError) as e:
                    why = e.message if isinstance(e, KilnError) else f"{url} gave no answer in time"
                    if loop.time() >= deadline:
                        break
                    continue
                except KilnError as e:  # the hub refused us (a token revoked, say): dialling again cannot help
                    raise ConnectionLost(f"{lost.message}; the hub refused the reconnect: {e.message}") from e
                self._hubs.moved(url)
                return conn
            if loop.time() + delay >= deadline:
                raise ConnectionLost(f"{lost.message}; no reconnect within {grace:g} s (last: {why})") from lost
            await asyncio.sleep(delay)
            delay = min(delay * 2, REDIAL_MOST)

    def _take_over(self, conn: Connection) -> None:
        """The new connection is up: what the hub did not keep is lost."""
        assert conn.session.welcome is not None
        kept = set(conn.session.welcome.resumed or ())
        for activity in [a for a in self._activities.values() if a.id not in kept]:
            activity.lost = ConnectionLost(f"activity {activity.id} was not kept while the connection was down")
            del self._activities[activity.id]
        log.warning("reconnected to the hub at %s; %d activities kept", self.url, len(self._activities))
        conn.on_event = self._on_event
        self._conn = conn
        self._up.set()

    @property
    def activities(self) -> list[Activity]:
        """The activities this requestor holds now."""
        return list(self._activities.values())

    def rent(
        self,
        image: str,
        demand: Demand | None = None,
        *,
        exclude: Iterable[str] = (),
        group: str | None = None,
        on_progress: RentProgressHandler | None = None,
        user: User | None = None,
        max_duration: float | None = None,
        budget: float | str | None = None,
        strategy: str | None = None,
        allow: Iterable[str] | None = None,
        deny: Iterable[str] = (),
        min_reputation: float | None = None,
    ) -> Rental:
        """Rent a container of ``image`` on a provider meeting ``demand``.

        Use as ``async with requestor.rent(...) as act`` (released on exit), or
        ``act = await requestor.rent(...)`` and call ``await act.release()`` yourself.
        Raises :class:`~kiln.NoMatch` naming the constraint no provider meets,
        :class:`~kiln.ImageNotFound` when the chosen provider lacks the image (its name
        is the error's ``provider``). Providers named in ``exclude`` are passed over; the
        activities of one ``group`` are kept on distinct providers.

        ``image`` may name an image in the hub's store (a tag or ``sha256:`` digest, see
        :meth:`push_image`): a provider lacking it loads it from the hub first, and
        ``on_progress(provider, image, done, total)`` is called as the bytes go (if it
        raises, the rent is given up and that is raised). The activity's ``pulled`` says
        how many bytes the provider loaded.

        ``user="root"`` runs the activity's commands as root (still without capabilities
        or network), on a provider whose operator allows it (``--allow-root``); otherwise
        they run as the image's ``USER``, or uid 65534 when it names none.

        The market's terms (protocol 1.5; a hub older than that refuses none of them but
        cannot honour them, so they raise :class:`~kiln.UnsupportedVersion` here):
        ``demand.max_price`` caps each rate of the provider's price; ``max_duration``
        (seconds) ends the activity then (it is lost with code ``expired``) and bounds what the
        hub holds; ``budget`` (credits, with a ``group``) caps what the group ever spends at
        the hub (the group's first rent sets it); ``strategy`` picks among the providers that
        fit: ``"least_loaded"`` (the default), ``"cheapest"`` or ``"reputation"``; only
        providers named in ``allow``, none named in ``deny`` (or ``exclude``), and none whose
        reputation is below ``min_reputation``. On a hub with a ledger a rent may raise
        :class:`~kiln.InsufficientFunds` (the requestor's credits cannot hold its worst case)
        or :class:`~kiln.BudgetExceeded` (what is left of the group's budget cannot).
        """
        if user not in (None, "root"):
            raise UsageError(f"user may only be 'root' (or None: the image's USER, else uid 65534), not {user!r}")
        terms = market_terms(
            max_duration=max_duration, budget=budget, strategy=strategy, allow=allow, min_reputation=min_reputation
        )
        if terms.budget is not None and group is None:
            raise UsageError("a budget is a group's: give the rent a group (a job's rents share one)")
        if isinstance(deny, str):
            raise UsageError("deny takes a list of provider names, not one string")
        excluded = sorted(set(exclude) | set(deny))
        return Rental(self, image, demand or Demand(), excluded, group, on_progress, user, terms)

    async def _rent(
        self,
        image: str,
        demand: Demand,
        exclude: list[str],
        group: str | None,
        on_progress: RentProgressHandler | None = None,
        user: User | None = None,
        terms: Terms | None = None,
    ) -> Activity:
        conn = await self.connected()
        rent = Rent(
            type="rent",
            id=conn.new_id(),
            image=image,
            demand=demand,
            exclude=exclude,
            group=group,
            user=user,
            **(terms or Terms()).fields(),
        )
        # The reader only notes the latest progress; the callback runs here, where its errors belong.
        latest: list[RentProgress] = []
        noted = asyncio.Event()

        def on_interim(info: Interim) -> None:
            if isinstance(info, RentProgress):
                latest[:] = [info]
                noted.set()

        future = await conn.start(rent, on_interim if on_progress is not None else None)
        try:
            if on_progress is not None:
                while not future.done():
                    waiter: asyncio.Future[Any] = asyncio.ensure_future(noted.wait())
                    try:
                        await asyncio.wait([future, waiter], return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        waiter.cancel()
                    noted.clear()
                    if latest:
                        step = latest.pop()
                        on_progress(step.provider, step.image, step.done, step.total)
            reply = await future
        except asyncio.CancelledError:
            await self._abandon(rent.id, future)
            raise
        except BaseException:  # on_progress raised
            if not future.done():
                await self._abandon(rent.id, future)
            raise
        assert isinstance(reply, Rented)
        activity = Activity(self, reply, self._forget)
        self._activities[activity.id] = activity
        return activity

    async def _abandon(self, rent_id: int, future: asyncio.Future[Message]) -> None:
        """Cancel a rent and wait until its capacity is free again (the caller is being cancelled)."""
        with contextlib.suppress(KilnError, TimeoutError):
            await self._conn.cancel(rent_id)
            async with asyncio.timeout(ABANDON_TIMEOUT):
                reply = await asyncio.shield(future)  # the hub answers once the container is gone
            if isinstance(reply, Rented):  # it was up before the cancel arrived
                activity = Activity(self, reply)
                await activity.release()

    def job(self, worker: Worker[T, R], items: Iterable[T], *, image: str, **options: Unpack[JobOptions]) -> Job[T, R]:
        """A :class:`~kiln.requestor.executor.Job` not started yet: follow its events, then run it.

        Options: ``demand``, ``max_providers`` (4), ``retries`` (2), ``task_timeout``,
        ``start_timeout`` (60 s), ``setup``, ``teardown``, ``return_exceptions``, ``on_event``;
        the market's (1.5): ``budget`` (credits), ``strategy``, ``allow``, ``deny``,
        ``min_reputation``, ``max_duration`` (see :meth:`rent`); ``verify``
        (:class:`~kiln.Redundant` or :class:`~kiln.SpotCheck`).
        """
        return Job(self, worker, items, image=image, **options)

    async def map(
        self,
        worker: Worker[T, R],
        items: Iterable[T],
        *,
        image: str,
        progress: bool | None = None,
        report: str | os.PathLike[str] | None = None,
        **options: Unpack[JobOptions],
    ) -> list[R]:
        """Run ``await worker(activity, item)`` for every item on rented activities; results in order.

        ``items`` may be any iterable, a generator too: it is read as activities free up.

        Options as for :meth:`job`: ``demand``, ``max_providers`` (4), ``retries`` (2),
        ``task_timeout``, ``start_timeout`` (60 s), ``setup``, ``teardown``,
        ``return_exceptions``, ``on_event``, ``budget``, ``strategy``, ``allow``, ``deny``,
        ``min_reputation``, ``max_duration``, ``verify``. ``progress``: a live bar and a summary
        on a terminal (None: only when stderr is a terminal); ``report``: write the job's HTML
        report (:meth:`Job.report`) to this path at the end, and print it. Raises
        :class:`~kiln.requestor.executor.TaskFailed` when a task fails for good,
        :class:`~kiln.BudgetExceeded` when the job's budget is spent before its tasks are done.
        """
        job: Job[T, R] = self.job(worker, items, image=image, **options)
        with ProgressView(job, enabled=progress, report=report):
            return await job.run()

    async def map_unordered(
        self,
        worker: Worker[T, R],
        items: Iterable[T],
        *,
        image: str,
        progress: bool | None = None,
        report: str | os.PathLike[str] | None = None,
        **options: Unpack[JobOptions],
    ) -> AsyncIterator[tuple[int, R]]:
        """Like :meth:`map`, but yield ``(index, result)`` as each task finishes."""
        job: Job[T, R] = self.job(worker, items, image=image, **options)
        with ProgressView(job, enabled=progress, report=report):
            results = job.results()
            try:
                async for index, value in results:
                    yield index, value
            finally:
                await results.aclose()

    async def service(
        self,
        image: str,
        demand: Demand | None = None,
        *,
        command: Sequence[str],
        ports: Sequence[int] = (),
        health: Health,
        replicas: int = 1,
        restart: Restart = "on-failure",
        setup: Setup | None = None,
        env: Mapping[str, str] | None = None,
        on_event: ServiceEventHandler | None = None,
        start_timeout: float = 60.0,
    ) -> Service:
        """Keep ``replicas`` copies of ``command`` running on distinct providers, each healthy by
        ``health`` (:class:`~kiln.Http` or :class:`~kiln.Tcp`); returns once every one is healthy.

        Each replica is rented, ``await setup(act)`` puts its inputs in, and ``command`` runs
        until the service stops (with ``env``). A replica whose health fails, whose provider is
        lost, or whose command ends past what ``restart`` (``"no"``, ``"on-failure"``,
        ``"always"``) restarts in place is replaced on another provider; ``on_event`` is told
        of each :class:`~kiln.ServiceEvent`. ``ports`` are those :meth:`Service.forward` may
        carry (default: the health check's). Raises
        :class:`~kiln.requestor.service.ServiceFailed` when a replica is not healthy on
        three activities in a row (``start_timeout`` seconds each). See :mod:`kiln.requestor.service`.
        """
        service = Service(
            self,
            image,
            demand or Demand(),
            command=command,
            ports=[*ports] or [health.port],
            health=health,
            replicas=replicas,
            restart=restart,
            setup=setup,
            env=env,
            on_event=on_event,
            start_timeout=start_timeout,
        )
        return await service.start()

    async def push_image(
        self,
        ref: str | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        tags: Iterable[str] = (),
        progress: PushProgress | None = None,
    ) -> PushedImage:
        """Store an image in the hub, so that providers lacking it load it from there.

        Either ``ref``, an image of the local Docker engine (saved with the ``docker``
        command), or ``path``, an archive ``docker save`` wrote (no Docker needed). The image
        is tagged with its own tags (the archive's ``RepoTags``) and ``tags``. Only the blobs
        the hub lacks are sent; ``progress(sent, to_send, skipped)`` follows the bytes. Then
        rent it by tag or digest (:meth:`rent`, :meth:`map`).

        Raises :class:`~kiln.ImageError` for an archive that is not one image as ``docker
        save`` writes it (or a failed ``docker save``), :class:`~kiln.StoreFull` when the
        hub has no room, :class:`~kiln.ImageCorrupt` when a blob's bytes do not match its
        digest, :class:`~kiln.UnsupportedVersion` for a hub older than protocol 1.1.
        """
        if (ref is None) == (path is None):
            raise UsageError("push_image takes an image of the local engine (ref) or an archive (path=), not both")
        if path is not None:
            archive = await asyncio.to_thread(read_archive, path)
            return await push_archive(await self.connected(), archive, tags, progress)
        assert ref is not None
        return await push_engine_image(await self.connected(), ref, tags, progress)

    async def list_images(self) -> ImageList:
        """The images in the hub's store this requestor may see (``images``, most recently used
        first: those its credential pushed, and those shared with it) and the bytes they hold
        (``used``) of the store's ``limit``. Each names its ``owners`` and, to an owner, whom it
        is ``shared`` with (a hub of 1.4)."""
        conn = await self.connected()
        reply = await conn.request(ListImages(type="list_images", id=conn.new_id()))
        assert isinstance(reply, ImageList)
        return reply

    async def remove_image(self, ref: str) -> None:
        """Remove an image this requestor pushed (by tag or ``sha256:`` digest) from the hub's store:
        its tags go, and the image with its last owner.

        Raises :class:`~kiln.ImageNotFound` when the store holds no such image that this
        requestor may see, :class:`~kiln.Unauthorized` for one shared with it that it did not
        push (unless it joined with an admin credential).
        """
        conn = await self.connected()
        reply = await conn.request(RemoveImage(type="remove_image", id=conn.new_id(), image=ref))
        assert isinstance(reply, Done)

    async def share_image(
        self, ref: str, with_: Iterable[str] = (), *, public: bool = False, revoke: bool = False
    ) -> None:
        """Share an image this requestor pushed (by tag or ``sha256:`` digest) with the tenants
        ``with_`` (credential names as ``kiln token ls`` shows them, ``#<id>`` for an id, ``#open``
        for the requestors that join without a credential), and with ``public`` with everyone.
        They can then rent it by its digest (tags stay each tenant's own). With ``revoke``, take
        those shares back (``public=True``: it is private again).

        Raises :class:`~kiln.ImageNotFound` for an image this requestor cannot see,
        :class:`~kiln.Unauthorized` for one it can see but did not push (unless it joined
        with an admin credential), :class:`~kiln.UsageError` for a name no live requestor
        credential has or when neither ``with_`` nor ``public`` is given,
        :class:`~kiln.UnsupportedVersion` for a hub older than protocol 1.4.
        """
        if isinstance(with_, str):
            raise UsageError("share_image takes a list of tenant names (with_=[name]), not one string")
        conn = await self.connected()
        try:
            message = ShareImage(
                type="share_image", id=conn.new_id(), image=ref, to=list(with_), public=public, revoke=revoke
            )
        except LocalProtocolError as e:
            raise UsageError(f"cannot share {ref!r}: {e.message}") from e
        reply = await conn.request(message)
        assert isinstance(reply, Done)

    async def market(
        self,
        *,
        image: str | None = None,
        labels: dict[str, str] | None = None,
        free: Demand | None = None,
        limit: int = 100,
    ) -> list[ProviderInfo]:
        """The providers the hub knows (their offer, what is free now, the images they hold), by name.

        Only those holding ``image``, carrying ``labels`` and with at least ``free``
        capacity left; at most ``limit`` (1 to 1000) of them. From a hub of protocol 1.5, each
        has its ``price`` (a :class:`~kiln.protocol.messages.Price` in micro-credits, None: free)
        and its ``reputation`` (0 to 1, from what the hub observed of it; see docs/concepts/market.md).
        """
        conn = await self.connected()
        wanted = Resources(cpus=0, memory=0)
        if free is not None:
            wanted = Resources(cpus=free.cpus, memory=free.memory, storage=free.storage)
        query = MarketQuery(type="market", id=conn.new_id(), image=image, labels=labels or {}, limit=limit, free=wanted)
        reply = await conn.request(query)
        assert isinstance(reply, MarketInfo)
        return reply.providers

    async def list_activities(self, *, all: bool = False, limit: int = MAX_LISTED) -> list[ActivityInfo]:
        """The activities this requestor holds at the hub, by id, at most ``limit`` (1 to 1000) of them.

        Each says whose it is (``requestor``, a name), where it runs (``provider``), its
        ``state`` (``creating``, ``ready``, ``destroying``, or ``absent``: held since a restart of
        the hub for a provider that has not come back yet), ``resources``, ``group``, ``started``
        (the hub's clock when it became ready) and ``image``. With ``all``, every activity at the
        hub: only for a requestor that joined with an admin credential (``kiln token create --role
        admin``), else :class:`~kiln.Unauthorized`. Listing another's activity lets no one touch
        it. Raises :class:`~kiln.UnsupportedVersion` for a hub older than protocol 1.3.
        """
        conn = await self.connected()
        reply = await conn.request(ActivitiesQuery(type="activities", id=conn.new_id(), all=all, limit=limit))
        assert isinstance(reply, ActivityList)
        return reply.activities

    # --- the ledger (protocol 1.5) ---------------------------------------------------------

    async def balance(self) -> Balance:
        """This requestor's account at the hub (its credential's): credits ``available`` to hold,
        ``held`` for its live activities, ``spent`` in all (each also in micro-credits).

        Raises :class:`~kiln.UnsupportedVersion` for a hub older than protocol 1.5.
        """
        conn = await self.connected()
        reply = await conn.request(BalanceQuery(type="balance", id=conn.new_id()))
        assert isinstance(reply, BalanceInfo)
        return Balance.of(reply)

    async def ledger(self, account: str | None = None, *, limit: int = 100) -> LedgerList:
        """The latest ``limit`` (1 to 1000) transactions of this requestor's account, newest first
        (``transactions``, amounts in micro-credits; ``matched``: how many there are in all). With
        an admin credential, those of ``account`` (``requestor:<id>``, ``provider:<name>``, ``hub``,
        ...), or every one when it is None.

        Raises :class:`~kiln.Unauthorized` for another's ``account`` without an admin credential,
        :class:`~kiln.UnsupportedVersion` for a hub older than protocol 1.5.
        """
        conn = await self.connected()
        try:
            query = LedgerQuery(type="ledger", id=conn.new_id(), account=account, limit=limit)
        except LocalProtocolError as e:
            raise UsageError(f"cannot list the ledger: {e.message}") from e
        reply = await conn.request(query)
        assert isinstance(reply, LedgerList)
        return reply

    # --- the market (1.5): what a job may cost, and verdicts on results ---------------------

    async def estimate(
        self,
        demand: Demand | None = None,
        *,
        max_duration: float,
        activities: int = 1,
        budget: float | str | None = None,
        image: str | None = None,
        allow: Iterable[str] | None = None,
        deny: Iterable[str] = (),
        min_reputation: float | None = None,
    ) -> float:
        """The most, in credits, that ``activities`` activities meeting ``demand`` could cost
        if each were held ``max_duration`` seconds, before anything runs: the dearest worst
        case among the providers that fit (``demand``'s resources, labels and ``max_price``;
        ``image``, ``allow``, ``deny``, ``min_reputation``), times ``activities``, at most
        ``budget``. A free provider costs 0. Asks the hub's market (at most 1,000 providers).

        Raises :class:`~kiln.NoMatch` when no provider the hub lists fits.
        """
        demand = demand or Demand()
        terms = market_terms(max_duration=max_duration, budget=budget, allow=allow, min_reputation=min_reputation)
        if activities < 1:
            raise UsageError(f"activities must be at least 1, not {activities}")
        allowed = set(terms.allow) if terms.allow is not None else None
        denied = set(deny)
        cap = demand.max_price
        worst: int | None = None
        for info in await self.market(image=image, labels=demand.labels, limit=MAX_LISTED):
            offered = info.offered
            if offered.cpus < demand.cpus or offered.memory < demand.memory or offered.storage < demand.storage:
                continue
            if info.name in denied or (allowed is not None and info.name not in allowed):
                continue
            if terms.min_reputation is not None and (info.reputation or 0.0) < terms.min_reputation:
                continue
            if cap is not None and info.price is not None and not within(info.price, cap):
                continue
            each = 0 if info.price is None else worst_case(info.price, demand.cpus, max_duration)
            worst = each if worst is None else max(worst, each)
        if worst is None:
            raise NoMatch("no provider the hub lists fits this demand and these terms")
        total = worst * activities
        if terms.budget is not None:
            total = min(total, terms.budget)
        return total / MICRO

    async def report_verdict(self, lost: str, agreed: Sequence[str]) -> None:
        """Tell the hub that the result of activity ``lost`` disagreed with those of the
        activities ``agreed`` (two or more, on other providers, agreeing among themselves): it
        counts against ``lost``'s provider and gives back what was paid for ``lost``. A job
        with ``verify=`` sends these itself.

        Raises :class:`~kiln.ActivityError` (code ``unknown_activity``) for an activity that
        is not this requestor's, :class:`~kiln.UnsupportedVersion` for a hub older than 1.5.
        """
        if isinstance(agreed, str):
            raise UsageError("agreed takes a list of activity ids, not one string")
        conn = await self.connected()
        try:
            message = VerdictReport(type="verdict", id=conn.new_id(), lost=lost, agreed=list(agreed))
        except LocalProtocolError as e:
            raise UsageError(f"cannot report a verdict on {lost!r}: {e.message}") from e
        reply = await conn.request(message)
        assert isinstance(reply, Done)

    def report_task(
        self,
        group: str,
        task: int,
        attempt: int,
        state: TaskState,
        *,
        activity: str | None = None,
        reason: str = "",
        moved: int = 0,
    ) -> None:
        """Tell the hub how attempt ``attempt`` of task ``task`` of the job whose rents name
        ``group`` went (1.6, for its dashboard): it ``started`` on ``activity``, or ended
        (``done``, ``retried``, ``failed``) for ``reason`` having moved ``moved`` bytes. Sent without
        waiting, and no reply comes; a job sends these itself for each attempt's start and end.

        Dropped, silently, when the hub is older than 1.6, while the connection is down or being
        dialled again, while the socket is backed up (:data:`kiln.connection.NOTIFY_BACKLOG`), and
        when a field is out of the protocol's bounds: a report never slows or fails a job.
        """
        conn = self._conn
        if self.reconnecting or conn.session.state is not State.OPEN or conn.session.minor < TASK_REPORTS:
            return
        with contextlib.suppress(KilnError):
            report = TaskReport(
                type="task",
                group=group,
                task=task,
                attempt=min(attempt, MAX_TASK_ATTEMPT),
                state=state,
                activity=activity,
                reason=clip(reason, MAX_REASON) or None,
                bytes=moved,
            )
            conn.notify(report)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Notified) and isinstance(event.message, ActivityLost):
            lost = event.message
            activity = self._activities.pop(lost.activity, None)
            if activity is not None:
                activity.lost = error_from_code(lost.code, lost.reason)
                self._ended_now(activity)
        elif isinstance(event, Notified) and isinstance(event.message, Cost):
            cost = event.message
            known = self._activities.get(cost.activity) or self._ended.get(cost.activity)
            if known is not None:
                known.charged(cost)

    def _forget(self, activity: Activity) -> None:
        if self._activities.pop(activity.id, None) is not None:
            self._ended_now(activity)

    def _ended_now(self, activity: Activity) -> None:
        """Keep ``activity`` a while after its end: the hub's final ``cost`` of it may follow."""
        self._ended[activity.id] = activity
        if len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)

    async def close(self) -> None:
        """Release every activity still held and close the connection, for good (no reconnect);
        returns once the requestor has stopped reading from the hub. Safe to call twice.

        While a reconnect is under way it is given up: the hub destroys what it held once
        its grace period ends.
        """
        self._closing = True
        if self.reconnecting and self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
            self.gone = ConnectionClosed("the requestor was closed while it reconnected")
            self._up.set()
        for activity in list(self._activities.values()):
            with contextlib.suppress(KilnError):
                await activity.release()
        self._activities.clear()
        await self._conn.close()
        if self._reader is not None:
            await self._reader


class Rental:
    """The pending result of :meth:`Requestor.rent`: await it, or use it with ``async with``."""

    def __init__(
        self,
        requestor: Requestor,
        image: str,
        demand: Demand,
        exclude: list[str],
        group: str | None,
        on_progress: RentProgressHandler | None = None,
        user: User | None = None,
        terms: Terms | None = None,
    ) -> None:
        self._requestor = requestor
        self._args = (image, demand, exclude, group, on_progress, user, terms)
        self._activity: Activity | None = None

    def __await__(self) -> Generator[Any, None, Activity]:
        return self._requestor._rent(*self._args).__await__()

    async def __aenter__(self) -> Activity:
        self._activity = await self._requestor._rent(*self._args)
        return self._activity

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        activity = self._activity
        if activity is None:
            return
        self._requestor._forget(activity)
        try:
            await activity.release()
        except ConnectionClosed:
            pass  # the hub destroys what a vanished requestor held


class connect:  # named like a function: ``async with kiln.connect(url) as r`` or ``r = await kiln.connect(url)``
    """Connect to the hub at ``url`` as a requestor: one hub's URL, or those of several hubs
    of one market (a list, or one string with commas: ``"ws://a:7465,ws://b:7465"``), of
    which it joins the first that answers.

    Either ``async with kiln.connect(url) as requestor:`` (closed on the way out), or
    ``requestor = await kiln.connect(url)``, then ``await requestor.close()`` yourself: both
    give a connected :class:`Requestor`, and closing it releases everything it holds.

    A ``wss://`` hub's certificate is verified against ``ssl``: an :class:`ssl.SSLContext`,
    or the path of the PEM file of the CA that signed it (without it, the system's trust
    store). Connecting raises :class:`~kiln.ConnectionLost` when the hub cannot be reached or
    its certificate is not trusted (the message says which).

    Connecting raises :class:`~kiln.protocol.errors.UsageError` (before any dial) naming a
    URL that is not a hub's, and ConnectionLost saying why each hub failed when none answers.

    With ``reconnect`` (default), a connection that drops is dialled again for as long as
    the hub keeps the requestor's activities (``kiln hub --grace``, 60 s by default), to
    the hub it was on first, then to the others: the activities go on working once it is
    back; see :class:`Requestor`.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        token: str | None = None,
        name: str = "requestor",
        ssl: Trust | None = None,
        reconnect: bool = True,
    ) -> None:
        self._url = url
        self._token = token
        self._name = name
        self._ssl = ssl
        self._reconnect = reconnect
        self._requestor: Requestor | None = None

    async def _dial(self, url: str, resume: str | None = None) -> Connection:
        return await Connection.open(
            url, role="requestor", name=self._name, token=self._token, ssl=self._ssl, resume=resume
        )

    async def _open(self) -> Requestor:
        """Dial the hubs and make the requestor (which starts reading): what both ways of connecting do."""
        hubs = HubRing(self._url)
        for url in hubs.urls:
            tls_options(url, self._ssl)  # a CA given with a ws:// hub among them fails before any dial
        failures: list[ConnectionLost] = []
        for url in hubs.order():
            try:
                conn = await self._dial(url)
            except ConnectionLost as e:  # another hub may answer; anything else would be said by each
                if len(hubs.urls) == 1:
                    raise
                failures.append(e if url in e.message else ConnectionLost(f"{url}: {e.message}"))
                continue
            hubs.moved(url)
            self._requestor = Requestor(conn, hubs, self._dial if self._reconnect else None, name=self._name)
            return self._requestor
        raise ConnectionLost(f"no hub answered: {'; '.join(e.message for e in failures)}") from failures[-1]

    def __await__(self) -> Generator[Any, None, Requestor]:
        return self._open().__await__()

    async def __aenter__(self) -> Requestor:
        return await self._open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._requestor is not None:
            await self._requestor.close()
