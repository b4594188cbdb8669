"""The hub's one flow-control mechanism (:mod:`kiln.hub.flow`), on its own: budgets, credit, batches."""

from __future__ import annotations

import json

from kiln.hub.actions import Action, Send, ServeCredit
from kiln.hub.flow import HUB, Batch, Flow, Route


def test_credit_goes_back_in_batches_of_half_a_window() -> None:
    batch = Batch(16)
    assert [batch.consumed() for _ in range(16)] == [0] * 7 + [8] + [0] * 7 + [8]
    assert [Batch(1).consumed() for _ in range(2)] == [1, 1], "a window of one: each chunk at once"


def test_a_receivers_budget_withholds_credit_until_its_queue_drains() -> None:
    out: list[Action] = []
    flow = Flow(chunk_bytes=8, budget_bytes=32, emit=out.append)  # room for 4 chunks
    flow.open(1)
    upload = Route(requestor=2, r_id=11, provider=1, p_id=5, upload=True)
    flow.grant(upload, 6)
    assert [json.loads(a.data) for a in out if isinstance(a, Send)] == [{"type": "credit", "stream": 11, "chunks": 4}]
    assert flow.spend(upload) and flow.spend(upload)
    flow.queue(1, 16)  # two frames toward the provider, not yet written
    out.clear()
    flow.delivered(1, 16)
    assert [json.loads(a.data) for a in out if isinstance(a, Send)] == [{"type": "credit", "stream": 11, "chunks": 2}]
    flow.end(upload)
    assert flow.room(1) == 4, "an ended stream's credit is free again"
    assert not flow.spend(upload)


def test_the_store_is_a_receiver_and_a_sender_like_any_other() -> None:
    out: list[Action] = []
    flow = Flow(chunk_bytes=8, budget_bytes=32, emit=out.append)
    flow.open(1)
    push = Route(requestor=2, r_id=3, provider=HUB, p_id=3, upload=True)
    assert push.push and push.receiver == HUB
    flow.grant(push, 64)  # the store bounds what it takes by what it grants: no budget of its own
    served = Route(requestor=HUB, r_id=7, provider=1, p_id=7, upload=True)
    flow.grant(served, 2)
    credit, serve = out
    assert isinstance(credit, Send) and json.loads(credit.data) == {"type": "credit", "stream": 3, "chunks": 64}
    assert serve == ServeCredit(1, 7, 2)
