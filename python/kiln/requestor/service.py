"""A service: a command kept running on N rented activities, checked for health, replaced when it fails.

::

    async def setup(act: kiln.Activity) -> None:
        await act.send_bytes(b"hello", "/golem/www/index.html")

    async with await requestor.service(
        "kiln-busybox:latest",
        kiln.Demand(cpus=1, memory="256MiB"),
        command=["busybox", "httpd", "-f", "-p", "8080", "-h", "/golem/www"],
        ports=[8080],
        health=kiln.Http(8080, "/"),
        replicas=2,
        setup=setup,
    ) as svc:
        async with await svc.forward(8080, local_port=8000) as fwd:
            ...  # http://127.0.0.1:8000/ answers from a healthy replica, round robin

Each replica is one activity, the replicas of a service on distinct providers (one rent
``group``). A replica is rented, ``setup(act)`` puts its inputs in, then its command starts
with :meth:`~kiln.Activity.stream` semantics: it runs until the service stops. Its health is
checked over :meth:`~kiln.Activity.connect` (:class:`Tcp`: the port accepts a connection;
:class:`Http`: a GET answers 2xx or 3xx), every ``interval`` once healthy, more often
before. A replica is healthy after its first passing check; it is replaced on another
provider (rented excluding the one it leaves, set up again, started) when

- its provider is lost (the activity is gone),
- ``retries`` checks in a row fail once it was healthy,
- it is not healthy ``start_timeout`` seconds after its command started,
- its command ends and the ``restart`` policy restarts it in place more than
  :data:`MAX_RESTARTS` times without a passing check between (the provider may be at fault).

When the requestor's own connection to the hub drops, the hub ends the commands it runs
(their output had nowhere to go). A replica whose command or check failed for that waits
for the requestor to reconnect (up to :data:`REJOIN_TIMEOUT` seconds): if the hub kept its
activity, its command starts again in place, counted neither as a failed check nor against
:data:`MAX_RESTARTS`; if not, it is replaced as above.

``restart`` says what a command that ends does: ``"on-failure"`` (default) restarts it in
place (same activity, no new setup) when its exit code is not 0, and stops the replica
(released, not replaced) when it is 0; ``"always"`` restarts it whatever the code; ``"no"``
stops the replica. A stopped replica leaves the service with fewer replicas.

What happens is told by :class:`ServiceEvent` values (``svc.events``, and ``on_event`` as it
comes). The state of each replica is the pure :class:`Replica` (no I/O: fed observations, it
answers what to do); :class:`Service` does the renting, checking and forwarding around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

from kiln.protocol.errors import (
    ActivityError,
    ConnectionClosed,
    ConnectionLost,
    ConnectionRefused,
    KilnError,
    ProviderLost,
    UsageError,
)
from kiln.protocol.messages import Demand
from kiln.requestor.activity import Activity
from kiln.requestor.ports import Forward, Streams, check_port
from kiln.requestor.ports import forward as forward_port

if TYPE_CHECKING:
    from kiln.connection import Connection
    from kiln.requestor.client import Requestor

Restart: TypeAlias = Literal["no", "on-failure", "always"]
RESTARTS: Final = ("no", "on-failure", "always")
EventKind: TypeAlias = Literal["start", "healthy", "failure", "replace", "stop"]
ReplicaState: TypeAlias = Literal["renting", "starting", "healthy", "stopped"]
Action: TypeAlias = Literal["keep", "restart", "replace", "stop"]
"""What a replica's observation asks of the I/O around it: nothing; start the command again on
the same activity; release the activity and rent another on another provider; release it for good."""

MAX_RESTARTS: Final = 3
"""Restarts in place without a passing check between, after which the replica is replaced instead."""
START_ATTEMPTS: Final = 3
"""Activities a replica may go through before its first healthy check while :func:`start` waits:
past that the service fails to start (a command or image that never works is not retried forever)."""
EVENTS_KEPT: Final = 1000
"""The latest events ``Service.events`` keeps (a service may run for months)."""
REASON_CHARS: Final = 300
"""The most of a reason an event carries (an exception's text, a command's last output)."""
FIRST_PROBES: Final = 0.2
"""Seconds between checks of a replica not yet healthy: it is let in as soon as it answers."""
REJOIN_TIMEOUT: Final = 60.0
"""Seconds a replica whose command or check failed because the requestor's connection dropped waits
for it to be back (the SDK itself gives up after the hub's grace period), before it is replaced."""
REJOIN_POLL: Final = 0.05
"""Seconds between two looks at a connection that dropped but that the SDK has not begun to dial again."""
RENT_RETRY_FIRST: Final = 0.5
RENT_RETRY_MOST: Final = 10.0
"""Seconds between failed rents of a replica: from the first, doubling up to the most."""


@dataclass(frozen=True, slots=True)
class Tcp:
    """A health check: ``port`` in the container accepts a connection within ``timeout`` seconds.

    Checked every ``interval`` seconds once the replica is healthy; ``retries`` failures in a
    row replace it.
    """

    port: int
    interval: float = 1.0
    timeout: float = 2.0
    retries: int = 3

    def __post_init__(self) -> None:
        _check_health(self.port, self.interval, self.timeout, self.retries)


@dataclass(frozen=True, slots=True)
class Http:
    """A health check: ``GET path`` on ``port`` answers 2xx or 3xx within ``timeout`` seconds.

    ``interval`` and ``retries`` as for :class:`Tcp`.
    """

    port: int
    path: str = "/"
    interval: float = 1.0
    timeout: float = 2.0
    retries: int = 3

    def __post_init__(self) -> None:
        _check_health(self.port, self.interval, self.timeout, self.retries)
        path = self.path
        if not path.startswith("/") or not (path.isascii() and path.isprintable()) or " " in path or len(path) > 1024:
            raise UsageError(f"an Http check's path is a URL path like '/health' (no spaces), not {self.path!r}")


Health: TypeAlias = Http | Tcp


def _check_health(port: int, interval: float, timeout: float, retries: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise UsageError(f"a health check's port is 1 to 65535, not {port!r}")
    if not interval > 0 or not timeout > 0 or isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
        raise UsageError("a health check's interval and timeout are positive seconds, its retries at least 1")


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    """Something that happened to replica ``replica`` (its index, 0 to N-1) at ``time`` (Unix seconds).

        ``start``: its command started on ``activity`` of ``provider`` (again, after a restart in
        place: ``reason`` says why). ``healthy``: its first check passed. ``failure``: a check
        failed, its command ended, its provider was lost, a rent failed, or the requestor's connection
    to the hub dropped and its command is started again in place (``reason``).
        ``replace``: it leaves ``activity`` on ``provider`` for another provider. ``stop``: it
        stopped for good (the service stopped, or its command ended and ``restart`` says no more).
    """

    kind: EventKind
    replica: int
    time: float
    activity: str | None = None
    provider: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """A replica as :attr:`Service.replicas` shows it: its state and where it runs now."""

    index: int
    state: ReplicaState
    activity: Activity | None
    provider: str | None
    restarts: int
    """Restarts of its command in place, all told."""
    replacements: int
    """Activities it left for another, all told."""


class Replica:
    """One replica's state machine: pure, fed what the I/O observed, answering an :data:`Action`.

    Times are the caller's monotonic seconds (``now``); events are stamped with the wall
    clock that ``clock`` (a monotonic reading and the Unix time at the same moment) maps
    them to. States: ``renting`` (no command runs: renting, setting up, or waiting to rent
    again), ``starting`` (its command runs, no check passed yet), ``healthy``, ``stopped``.
    """

    def __init__(
        self, index: int, *, restart: Restart, retries: int, start_timeout: float, clock: tuple[float, float]
    ) -> None:
        self.index = index
        self.restart: Restart = restart
        self.retries = retries
        self.start_timeout = start_timeout
        self._clock = clock
        self.state: ReplicaState = "renting"
        self.activity: str | None = None
        self.provider: str | None = None
        self.left: str | None = None
        """The provider it was last replaced from: the next rent excludes it."""
        self.failures = 0
        """Failed checks in a row since the last that passed."""
        self.exits = 0
        """Restarts in place since the last passing check."""
        self.fruitless = 0
        """Activities left (or rents failed) since it was last healthy."""
        self.healthy_once = False
        self.restarts = 0
        self.replacements = 0
        self.since = 0.0
        """When its command (last) started."""

    def _event(self, kind: EventKind, now: float, reason: str = "") -> ServiceEvent:
        mono, wall = self._clock
        reason = reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 3] + "..."
        return ServiceEvent(kind, self.index, wall + (now - mono), self.activity, self.provider, reason)

    def started(self, activity: str, provider: str, now: float, reason: str = "") -> list[ServiceEvent]:
        """Its command started on ``activity`` (a new one, or the same after a ``restart``)."""
        if self.state == "stopped":
            return []
        self.state = "starting"
        self.activity, self.provider, self.since = activity, provider, now
        self.failures = 0
        return [self._event("start", now, reason)]

    def checked(self, ok: bool, reason: str, now: float) -> tuple[Action, list[ServiceEvent]]:
        """A health check ended: passed (``ok``) or failed for ``reason``."""
        if self.state == "starting":
            if ok:
                self.state = "healthy"
                self.exits = self.fruitless = 0
                self.healthy_once = True
                return "keep", [self._event("healthy", now)]
            if now - self.since >= self.start_timeout:
                return self._replace(f"not healthy {self.start_timeout:g} s after its start: {reason}", now)
            return "keep", []
        if self.state != "healthy":
            return "keep", []
        if ok:
            self.failures = 0
            return "keep", []
        self.failures += 1
        events = [self._event("failure", now, f"health check failed ({self.failures}/{self.retries}): {reason}")]
        if self.failures < self.retries:
            return "keep", events
        action, more = self._replace(f"{self.failures} health checks failed in a row: {reason}", now)
        return action, events + more

    def exited(self, exit_code: int | None, reason: str, now: float) -> tuple[Action, list[ServiceEvent]]:
        """Its command ended with ``exit_code`` (None: killed, or no code); ``reason`` its last words."""
        if self.state not in ("starting", "healthy"):
            return "keep", []
        code = "no exit code" if exit_code is None else f"exit code {exit_code}"
        why = f"its command ended ({code}){': ' + reason if reason else ''}"
        again = self.restart == "always" or (self.restart == "on-failure" and exit_code != 0)
        if not again:
            self.state = "stopped"
            return "stop", [self._event("stop", now, f"{why}; restart={self.restart!r} does not restart it")]
        failure = self._event("failure", now, why)
        if self.exits >= MAX_RESTARTS:
            action, more = self._replace(f"{why}, after {self.exits} restarts in place without a passing check", now)
            return action, [failure, *more]
        self.exits += 1
        self.restarts += 1
        self.state = "renting"
        return "restart", [failure]

    def interrupted(self, reason: str, now: float) -> tuple[Action, list[ServiceEvent]]:
        """Its command ended because the requestor's connection to the hub dropped, and the hub kept its
        activity: it starts again in place, neither a failed check nor a restart towards :data:`MAX_RESTARTS`."""
        if self.state not in ("starting", "healthy"):
            return "keep", []
        self.restarts += 1
        self.state = "renting"
        return "restart", [self._event("failure", now, f"interrupted, restarted in place: {reason}")]

    def lost(self, reason: str, now: float) -> tuple[Action, list[ServiceEvent]]:
        """Its activity is gone (the provider was lost), or setting it up or starting its command failed."""
        if self.state == "stopped":
            return "keep", []
        return self._replace(reason, now, failure=True)

    def rent_failed(self, reason: str, now: float) -> list[ServiceEvent]:
        """A rent for it failed (no provider, say): it stays ``renting`` and is rented again later."""
        if self.state == "stopped":
            return []
        self.fruitless += 1
        return [self._event("failure", now, f"rent failed: {reason}")]

    def stop(self, reason: str, now: float) -> list[ServiceEvent]:
        """The service stops it."""
        if self.state == "stopped":
            return []
        self.state = "stopped"
        return [self._event("stop", now, reason)]

    @property
    def given_up(self) -> bool:
        """Whether it went through :data:`START_ATTEMPTS` activities or rents without ever being healthy."""
        return not self.healthy_once and self.fruitless >= START_ATTEMPTS

    def _replace(self, reason: str, now: float, *, failure: bool = False) -> tuple[Action, list[ServiceEvent]]:
        events = [self._event("failure", now, reason)] if failure else []
        events.append(self._event("replace", now, reason))
        self.state = "renting"
        self.left = self.provider
        self.activity = self.provider = None
        self.failures = self.exits = 0
        self.fruitless += 1
        self.replacements += 1
        return "replace", events


class ServiceFailed(ActivityError):
    """A service could not start: a replica never became healthy on :data:`START_ATTEMPTS` activities."""


Setup: TypeAlias = Callable[[Activity], Awaitable[None]]
EventHandler: TypeAlias = Callable[[ServiceEvent], None]


class Service:
    """Replicas of a command kept running and healthy. Get one from :meth:`kiln.Requestor.service`.

    ``async with`` it (or call :meth:`stop`): on the way out every replica is stopped and its
    activity released.
    """

    def __init__(
        self,
        requestor: Requestor,
        image: str,
        demand: Demand,
        *,
        command: Sequence[str],
        ports: Sequence[int],
        health: Health,
        replicas: int,
        restart: Restart,
        setup: Setup | None,
        env: Mapping[str, str] | None,
        on_event: EventHandler | None,
        start_timeout: float,
    ) -> None:
        if isinstance(command, str) or not command or not all(isinstance(a, str) for a in command):
            raise UsageError("a service's command is a non-empty list of strings, e.g. ['busybox', 'httpd', '-f']")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise UsageError(f"a service needs at least 1 replica, not {replicas!r}")
        if restart not in RESTARTS:
            raise UsageError(f"restart is one of {', '.join(RESTARTS)}, not {restart!r}")
        if not isinstance(health, (Http, Tcp)):
            raise UsageError("health is kiln.Http(port, path) or kiln.Tcp(port)")
        if not start_timeout > 0:
            raise UsageError("start_timeout is positive seconds")
        self.ports = [check_port(port) for port in ports]
        self._requestor = requestor
        self._image = image
        self._demand = demand
        self._command = [*command]
        self._health = health
        self._setup = setup
        self._env = dict(env or {})
        self._on_event = on_event
        self._group = f"service-{secrets.token_hex(6)}"
        clock = (time.monotonic(), time.time())
        self._machines = [
            Replica(i, restart=restart, retries=health.retries, start_timeout=start_timeout, clock=clock)
            for i in range(replicas)
        ]
        self._activities: list[Activity | None] = [None] * replicas
        self._errors: list[BaseException | None] = [None] * replicas
        """The latest exception ``setup`` (or a bug) raised for each replica: the cause of a ServiceFailed."""
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self._turn = itertools.count()
        self._forwards: list[Forward] = []
        self._stopping = False
        self.events: list[ServiceEvent] = []
        """What happened, oldest first (the latest :data:`EVENTS_KEPT`)."""

    # --- what it looks like -------------------------------------------------------------

    @property
    def replicas(self) -> list[ReplicaStatus]:
        """Each replica now, by index."""
        return [
            ReplicaStatus(m.index, m.state, self._activities[m.index], m.provider, m.restarts, m.replacements)
            for m in self._machines
        ]

    def healthy(self) -> list[Activity]:
        """The activities of the replicas healthy now, by replica index."""
        return [
            act
            for m, act in zip(self._machines, self._activities, strict=True)
            if m.state == "healthy" and act is not None
        ]

    def pick(self) -> list[Activity]:
        """The healthy activities in the order a new connection tries them: round robin, the next first."""
        healthy = self.healthy()
        if not healthy:
            return []
        first = next(self._turn) % len(healthy)
        return healthy[first:] + healthy[:first]

    # --- running ------------------------------------------------------------------------

    async def start(self) -> Service:
        """Start every replica and wait until each is healthy; raises :class:`ServiceFailed` (every
        replica stopped) when one never becomes healthy, or what ``setup`` raised."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._keep(m), name=f"kiln-service-{m.index}") for m in self._machines]
        try:
            while True:
                if all(m.state == "healthy" for m in self._machines):
                    return self
                for task in self._tasks:
                    if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                        raise error
                stuck = [m for m in self._machines if m.given_up or (m.state == "stopped" and not m.healthy_once)]
                if stuck:
                    reasons = "; ".join(f"replica {m.index}: {self._last_reason(m.index)}" for m in stuck)
                    cause = next((self._errors[m.index] for m in stuck if self._errors[m.index] is not None), None)
                    raise ServiceFailed(f"{len(stuck)} replica(s) never became healthy: {reasons}") from cause
                self._changed.clear()
                await self._changed.wait()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop every replica and release its activity, and close the service's forwards. Safe to call twice."""
        if self._stopping:
            return
        self._stopping = True
        for forward in list(self._forwards):
            await forward.close()
        now = time.monotonic()
        for m in self._machines:
            self._note(m.stop("the service stopped", now))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def forward(self, port: int, local_port: int = 0, *, host: str = "127.0.0.1") -> Forward:
        """Listen on ``host:local_port`` (0: a free port) and carry each connection accepted there
        to ``port`` of a healthy replica, the next in turn (one that refuses: the next after it).

        Returns the :class:`~kiln.Forward` (``.host``, ``.port``, ``await fwd.close()``, or
        ``async with``); :meth:`stop` closes it too. Raises OSError when the address cannot be used.
        """
        if port not in self.ports:
            raise UsageError(f"port {port} is not one of the service's ports {self.ports}")
        fwd = await forward_port(lambda: self._open(port), f"service:{port}", local_port=local_port, host=host)
        self._forwards.append(fwd)
        return fwd

    async def _open(self, port: int) -> Streams:
        """A connection to ``port`` of the next healthy replica that takes it."""
        why = "no replica is healthy"
        for act in self.pick():
            try:
                return await act.connect(port)
            except KilnError as e:  # that replica refuses or just went: the next
                why = f"{act.provider}: {e.message}"
        raise ConnectionRefused(f"no replica of the service took a connection to port {port} ({why})")

    async def __aenter__(self) -> Service:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- one replica --------------------------------------------------------------------

    def _note(self, events: list[ServiceEvent]) -> None:
        for event in events:
            self.events.append(event)
            if self._on_event is not None:
                self._on_event(event)
        if len(self.events) > EVENTS_KEPT:
            del self.events[: len(self.events) - EVENTS_KEPT]
        if events:
            self._changed.set()

    def _last_reason(self, index: int) -> str:
        """Why replica ``index`` last failed or stopped (as its latest such event says)."""
        reasons = [e.reason for e in self.events if e.replica == index and e.kind in ("failure", "stop") and e.reason]
        return reasons[-1] if reasons else "no reason known"

    async def _keep(self, m: Replica) -> None:
        """Keep replica ``m`` running until it stops: rent, set up, run, replace. What nothing
        expects (a bug) stops the replica, and :meth:`start` raises it."""
        try:
            await self._replicate(m)
        except Exception as e:
            self._errors[m.index] = e
            self._note(m.stop(f"stopped by an unexpected error: {type(e).__name__}: {e}", time.monotonic()))
            raise

    async def _replicate(self, m: Replica) -> None:
        wait = RENT_RETRY_FIRST
        while m.state != "stopped" and not m.given_up:
            try:
                act = await self._requestor.rent(
                    self._image, self._demand, group=self._group, exclude=[m.left] if m.left else []
                )
            except KilnError as e:
                self._note(m.rent_failed(e.message, time.monotonic()))
                await asyncio.sleep(wait)
                wait = min(wait * 2, RENT_RETRY_MOST)
                continue
            wait = RENT_RETRY_FIRST
            self._activities[m.index] = act
            try:
                await self._tend(m, act)
            finally:
                self._activities[m.index] = None
                self._changed.set()
                with contextlib.suppress(KilnError):
                    await act.release()

    async def _tend(self, m: Replica, act: Activity) -> None:
        """Set ``act`` up and run the command on it, again while ``m`` says restart; return when it says
        replace or stop."""
        try:
            if self._setup is not None:
                await self._setup(act)
        except Exception as e:  # noqa: BLE001 - the user's setup: whatever it raises fails this activity
            self._errors[m.index] = e
            self._note(m.lost(f"setup failed: {type(e).__name__}: {e}", time.monotonic())[1])
            return
        reason = ""
        while True:
            self._note(m.started(act.id, act.provider, time.monotonic(), reason))
            command = asyncio.get_running_loop().create_task(self._run(act), name=f"kiln-service-{m.index}-command")
            try:
                action = await self._watch(m, act, command)
            finally:
                command.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await command
            if action != "restart":
                return
            reason = self._last_reason(m.index)

    async def _watch(self, m: Replica, act: Activity, command: asyncio.Task[tuple[int | None, str]]) -> Action:
        """Check ``m``'s health while its command runs, until the machine asks for something."""
        while True:
            interval = FIRST_PROBES if m.state == "starting" else self._health.interval
            await asyncio.wait([command], timeout=interval)
            now = time.monotonic()
            if command.done():
                error = command.exception()
                if error is None:
                    exit_code, last = command.result()
                    action, events = m.exited(exit_code, last, now)
                elif isinstance(error, ConnectionLost) and await self._rejoin(act):
                    why = f"the requestor's connection to the hub dropped: {error.message}"
                    action, events = m.interrupted(why, time.monotonic())
                elif isinstance(error, KilnError):
                    action, events = m.lost(_lost_reason(act, error), time.monotonic())
                else:
                    raise error
                self._note(events)
                return action
            conn = self._requestor.connection
            ok, reason = await probe(act, self._health)
            if not ok and self._dropped(conn) and await self._rejoin(act):
                continue  # the requestor's connection failed the check, not the replica
            if act.lost is not None:
                action, events = m.lost(_lost_reason(act, act.lost), time.monotonic())
            else:
                action, events = m.checked(ok, reason, time.monotonic())
            self._note(events)
            if action != "keep":
                return action

    def _dropped(self, conn: Connection) -> bool:
        """Whether the requestor's connection ``conn`` (the one of the moment a while ago) dropped since."""
        now = self._requestor.connection
        return now is not conn or now.session.closed is not None or self._requestor.reconnecting

    async def _rejoin(self, act: Activity) -> bool:
        """Wait until the requestor is connected to the hub again (up to :data:`REJOIN_TIMEOUT` s):
        whether it is and the hub kept ``act``."""
        try:
            async with asyncio.timeout(REJOIN_TIMEOUT):
                while True:
                    conn = await self._requestor.connected()
                    if conn.session.closed is None or act.lost is not None:
                        break
                    await asyncio.sleep(REJOIN_POLL)  # dropped, and the SDK has not begun to dial again yet
        except (TimeoutError, ConnectionClosed):
            return False
        return act.lost is None

    async def _run(self, act: Activity) -> tuple[int | None, str]:
        """Run the command until it ends: its exit code and the end of its output (for the reason)."""
        tail = b""
        async with contextlib.aclosing(act.stream(self._command, env=self._env)) as events:
            async for event in events:
                if event.kind == "exit":
                    assert event.result is not None
                    last = tail.decode(errors="replace").strip().splitlines()
                    return event.result.exit_code, last[-1] if last else ""
                tail = (tail + event.data)[-REASON_CHARS:]
        return None, ""


def _lost_reason(act: Activity, error: KilnError) -> str:
    if isinstance(error, ProviderLost) or act.lost is not None:
        return f"provider {act.provider} lost: {(act.lost or error).message}"
    return f"its command failed: {error.message}"


async def probe(act: Activity, health: Health) -> tuple[bool, str]:
    """Check ``health`` once on ``act``: whether it passed, and if not why."""
    try:
        async with asyncio.timeout(health.timeout):
            reader, writer = await act.connect(health.port)
            try:
                if isinstance(health, Tcp):
                    return True, ""
                head = f"GET {health.path} HTTP/1.0\r\nHost: 127.0.0.1:{health.port}\r\nConnection: close\r\n\r\n"
                writer.write(head.encode())
                await writer.drain()
                return _status_ok(await reader.readuntil(b"\n"))
            finally:
                writer.close()
    except TimeoutError:
        return False, f"no answer within {health.timeout:g} s"
    except KilnError as e:
        return False, e.message
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
        return False, f"{type(e).__name__}: {e}"


def _status_ok(line: bytes) -> tuple[bool, str]:
    """Whether an HTTP status line says 2xx or 3xx."""
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit() or len(parts[1]) != 3:
        return False, f"not an HTTP answer: {line[:80]!r}"
    status = int(parts[1])
    if 200 <= status < 400:
        return True, ""
    return False, f"HTTP {status}"
