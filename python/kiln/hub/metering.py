"""Metering: what priced activities cost, as the hub measures it, and the requests on the ledger.

About once a second (:meth:`~kiln.hub.core.HubCore.expire`) the hub ends every activity held
past its rent's ``max_duration`` (``activity_lost``, code ``expired``), and for every priced
activity due a capture (each ``capture_interval``): asks a provider of 1.5 for the CPU seconds
its container used (``meter``, answered ``done`` with ``cpu_seconds``; an older provider's
activity is captured on its wall time, its CPU at the end), captures what became due and
tells the requestor and the provider (``cost``), and tops up a hold about to run out, or
ends the activity when nothing more can be held (``insufficient_funds`` or
``budget_exceeded``). The bookkeeping is :class:`kiln.hub.ledger.Ledger`'s; the final capture
and the release at every end are :meth:`~kiln.hub.base.CoreBase._ended`'s.

A requestor asks its ``balance``, the ``ledger`` (its own transactions; an admin's: any
account's, or all), and reports a ``verdict``: the provider of the activity that lost it
falls in reputation, those that agreed rise, and what the requestor paid for it comes back
(once).

What the hub shows of use, not charged for (1.6): a provider's ``usage`` (what each of its
containers used, from their cgroups) is kept on each lease (``cpu_seconds``, ``memory``, and
``cpu_rate``, the cores used between its last two reports) and summed in
:attr:`~kiln.hub.base.CoreBase.tallies`; a requestor's ``task`` reports go to the record of
their job (:attr:`~kiln.hub.base.CoreBase.jobs`). Neither is answered.

A layer of :class:`~kiln.hub.core.HubCore` (see :mod:`kiln.hub.base`).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from kiln.hub.base import credential_id, shown
from kiln.hub.ledger import Meter, Post, Refusal, requestor_account
from kiln.hub.peers import Lease, Peer, Pending
from kiln.hub.records import LeaseRecord, MeterRecord
from kiln.hub.relay import Relay
from kiln.protocol.codes import ErrorCode
from kiln.protocol.messages import (
    ActivityLost,
    BalanceInfo,
    BalanceQuery,
    Done,
    LedgerList,
    LedgerQuery,
    Price,
    TaskReport,
    Usage,
    VerdictReport,
    clip,
)
from kiln.protocol.messages import (
    Meter as MeterRequest,
)


class Metering(Relay):
    """The meter's tick, the ends it calls for, and the ledger's requests."""

    def _meter_tick(self) -> None:
        """End what reached its ``max_duration``; capture (or ask to meter) what is due; top up holds."""
        now = self._clock()
        while self._expiry and self._expiry[0][0] <= now:
            until, activity_id = heapq.heappop(self._expiry)
            if self._expiring.get(activity_id) != until:
                continue  # ended, or its deadline set anew
            del self._expiring[activity_id]
            lease = self.activities.get(activity_id)
            if lease is not None and lease.state in ("ready", "absent"):
                why = f"activity {activity_id} reached the max_duration of its rent"
                self._end_lease(lease, ErrorCode.EXPIRED, why)
        interval = self.ledger.capture_interval
        for meter in self.ledger.due_meters(now):
            lease = self.activities.get(meter.activity)
            if lease is None:
                continue
            self.ledger.schedule(meter, now + interval)
            if lease.state != "ready":  # absent or being destroyed: looked at again an interval on
                continue
            q = self.peers[lease.provider]
            if q.minor >= 5 and not meter.asking:
                meter.asking = True
                hub_id = q.new_id()
                q.pending[hub_id] = Pending("meter", lease.id, None, None)
                self._send(q.id, MeterRequest(type="meter", id=hub_id, activity=lease.id))
            else:  # no meter (or no answer to the last one yet): the wall time, the CPU known so far
                self._charge(lease, None)
            topped = self.ledger.top_up(meter, now)
            if isinstance(topped, Post) and self.cluster is not None:  # the database decides (several hubs)
                if self.cluster.hold(topped):
                    self.ledger.written(topped)
                    continue
                self.ledger.withdraw(meter, topped)
                topped = Refusal(ErrorCode.INSUFFICIENT_FUNDS, f"activity {meter.activity} ended: no credits left")
            if isinstance(topped, Refusal):
                self._end_lease(lease, topped.code, topped.message)
            elif topped is not None:
                self._out.append(topped)

    def _end_lease(self, lease: Lease, code: ErrorCode, why: str) -> None:
        """The hub ends ``lease``: its requestor hears why (``activity_lost``), its container is destroyed."""
        self._log("info", f"activity {lease.id}: {shown(why)}")
        self._lost([lease], f"as the hub ended it ({code.value})")
        owner = self.peers.get(lease.requestor)
        if owner is not None:
            self._send(owner.id, ActivityLost(type="activity_lost", activity=lease.id, code=code, reason=clip(why)))
        if lease.state == "absent":
            self._absent.get(lease.provider_name, set()).discard(lease.id)
            self._drop_activity(lease)
        else:
            self._destroy(lease, None, None)

    # --- a restart ------------------------------------------------------------------------

    def _restore_meters(
        self, leases: Sequence[LeaseRecord], meters: Sequence[MeterRecord], accounts: dict[str, str]
    ) -> None:
        """Take back the meters of the restored leases (``accounts``: activity -> its requestor's
        account); settle those of leases not restored: a final capture at the end the record
        names (else now), then the release of the rest."""
        now = self._clock()
        records = {lr.id: lr for lr in leases}
        for mr in meters:
            lr = records.get(mr.activity)
            account = accounts.get(mr.activity) or mr.requestor or self._account_of(mr.activity)
            if account is None:
                self._log("warning", f"activity {mr.activity}: its hold names no requestor; left as it is")
                continue
            price = Price.micro(mr.start, mr.cpu_hour, mr.env_hour)
            meter = Meter(
                mr.activity,
                account,
                lr.provider if lr is not None else mr.provider or "",
                price,
                lr.resources.cpus if lr is not None else mr.cpus,
                mr.max_duration,
                lr.session if lr is not None else mr.session or "",
                lr.group if lr is not None else mr.group,
                held=mr.held,
                captured=mr.captured,
                seq=mr.seq,
                cpu_seconds=mr.cpu_seconds,
                seconds=mr.seconds,
                started=lr.started if lr is not None else mr.started,
                tops=mr.tops,
            )
            self.ledger.add(meter)
            self.ledger.schedule(meter, now + self.ledger.capture_interval)
            if self._reversed(mr.activity):  # it lost a verdict before the restart: its end pays back the rest
                self.ledger.judge(mr.activity)
            if mr.activity not in self.activities:
                posts, _ = self.ledger.close(mr.activity, now if mr.ended is None else mr.ended, None)
                for post in posts:
                    self._post(post)

    def _reversed(self, activity: str) -> bool:
        """Whether the ledger holds a reversal of what was paid for ``activity`` (it lost a verdict)."""
        if self.ledger.accounts is None:
            return False
        found = self.ledger.accounts.transactions(activity=activity, limit=1_000_000)  # all: as reverse() reads them
        return any(t.kind == "reverse" for t in found)

    def _account_of(self, activity: str) -> str | None:
        """The requestor account an activity's first hold came from (what the ledger says)."""
        if self.ledger.accounts is None:
            return None
        for txn in self.ledger.accounts.transactions(activity=activity, limit=1_000_000):
            if txn.kind == "hold":
                return next((e.account for e in txn.entries if e.amount < 0), None)
        return None

    # --- requests -------------------------------------------------------------------------

    def _account(self, p: Peer, re: int) -> str | None:
        """``p``'s account, or ``None`` having told it that it has none."""
        if self.ledger.accounts is None or p.credential is None:
            text = "no account: this hub keeps no ledger, or you joined without a requestor credential"
            self._error(p, re, ErrorCode.UNAUTHORIZED, text)
            return None
        return requestor_account(p.credential.id)

    def _balance(self, p: Peer, message: BalanceQuery) -> None:
        """``p``'s account: available (as committed), held for its live activities, spent in all."""
        account = self._account(p, message.id)
        if account is None:
            return
        assert self.ledger.accounts is not None
        info = BalanceInfo(
            type="balance_info",
            re=message.id,
            account=account,
            available=self.ledger.available(account),
            held=self.ledger.held(account),
            spent=max(self.ledger.accounts.spent(account), 0),
        )
        self._send(p.id, info)

    def _ledger_list(self, p: Peer, message: LedgerQuery) -> None:
        """The latest transactions of ``p``'s account (an admin's: ``account``'s, or all), newest first."""
        admin = p.credential is not None and p.credential.role == "admin"
        own = self._account(p, message.id)
        if own is None:
            return
        if message.account is not None and message.account != own and not admin:
            self._error(p, message.id, ErrorCode.UNAUTHORIZED, "another account's ledger needs an admin credential")
            return
        account = message.account if admin else own
        assert self.ledger.accounts is not None
        found = self.ledger.accounts.transactions(account=account, limit=message.limit)
        listed = self._fitting(found)
        matched = self.ledger.accounts.count_transactions(account=account)
        self._send(p.id, LedgerList(type="ledger_list", re=message.id, transactions=listed, matched=matched))

    def _verdict(self, p: Peer, message: VerdictReport) -> None:
        """Activity ``lost`` disagreed with ``agreed`` (all ``p``'s, ``agreed`` on other providers):
        reputation hears it, and what ``p`` paid for ``lost`` comes back, once."""
        named = [message.lost, *message.agreed]
        where = [self._provider_of(p, activity) for activity in named]
        unknown = [activity for activity, provider in zip(named, where, strict=True) if provider is None]
        if unknown:
            self._error(p, message.id, ErrorCode.UNKNOWN_ACTIVITY, f"no activity {unknown[0]!r} of yours")
            return
        loser, *winners = [provider for provider in where if provider is not None]
        if loser in winners:
            text = f"activity {message.lost!r} ran on {loser!r}, as one that agreed: a verdict needs other providers"
            self._error(p, message.id, ErrorCode.BAD_MESSAGE, text)
            return
        if self.ledger.judge(message.lost):
            self.reputation.verdict(loser, False)
            for name in dict.fromkeys(winners):
                self.reputation.verdict(name, True)
            self._log(
                "info", f"activity {message.lost} of {shown(p.name)} lost a verdict: {shown(loser)} is not paid for it"
            )
            if self.ledger.accounts is not None and p.credential is not None:
                post = self.ledger.reverse(message.lost, requestor_account(p.credential.id), self._clock())
                if post is not None:
                    self._out.append(post)
        self._send(p.id, Done(type="done", re=message.id))

    def _provider_of(self, p: Peer, activity: str) -> str | None:
        """The provider name of ``p``'s activity, live or ended not long ago (``None``: not ``p``'s)."""
        lease = self.activities.get(activity)
        if lease is not None:
            return lease.provider_name if lease.requestor == p.id else None
        ended = self.ledger.ended.get(activity)
        if ended is None:
            return None
        mine = ended.session == p.session or (ended.credential is not None and ended.credential == credential_id(p))
        return ended.provider if mine else None

    # --- what the hub shows -----------------------------------------------------------------

    def _usage(self, p: Peer, message: Usage) -> None:
        """Provider ``p`` tells what its containers use: kept on each of its leases (others' dropped).

        The rate and the memory are capped at what the lease was granted (the container's limits):
        reports timed by their arrival come bunched after a stall, and a provider may say anything."""
        now = self._monotonic()
        for entry in message.activities:
            lease = self.activities.get(entry.activity)
            if lease is None or lease.provider != p.id:
                continue
            rate = None
            last = lease.cpu_seconds
            if last is not None and now > lease.sampled and entry.cpu_seconds >= last:
                rate = min((entry.cpu_seconds - last) / (now - lease.sampled), lease.resources.cpus)
            elif last is not None and now <= lease.sampled:
                rate = lease.cpu_rate  # two reports at once: the rate known stands
            lease.cpu_seconds, lease.sampled = entry.cpu_seconds, now
            self._used(lease, rate, min(entry.memory, lease.resources.memory))

    def _task(self, p: Peer, message: TaskReport) -> None:
        """Requestor ``p`` reports an attempt of a task of its job ``message.group`` (dropped if it
        names an activity that is not ``p``'s, live or ended not long ago)."""
        provider = ""
        if message.activity is not None:
            found = self._provider_of(p, message.activity)
            if found is None:
                return
            provider = found
        self.jobs.report(
            p.session,
            message.group,
            credential_id(p),
            p.name,
            self._clock(),
            task=message.task,
            attempt=message.attempt,
            state=message.state,
            activity=message.activity,
            provider=provider,
            reason=message.reason,
            size=message.bytes,
        )
