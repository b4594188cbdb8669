"""The reputation a provider earns from what the hub observes: its formula, hooks and persistence."""

from __future__ import annotations

import pytest

from kiln.hub.records import SaveReputation
from kiln.hub.reputation import COUNTERS, NEUTRAL, PRIOR, VERDICT_WEIGHT, Reputation, score


def test_a_new_provider_starts_neutral() -> None:
    reputation = Reputation()
    assert reputation.score("never-seen") == NEUTRAL == score({})
    reputation.connected("p")
    assert reputation.score("p") == NEUTRAL, "a connection alone says nothing"
    assert reputation.counters("p") == {**dict.fromkeys(COUNTERS, 0.0), "connections": 1.0}


@pytest.mark.parametrize("fail", ["failed_to_start", "lost", "timed_out", "transfer_failed"])
def test_each_failure_lowers_the_score_and_each_start_raises_it(fail: str) -> None:
    reputation = Reputation()
    getattr(reputation, fail)("p")
    after_one = reputation.score("p")
    assert after_one < NEUTRAL
    getattr(reputation, fail)("p")
    assert reputation.score("p") < after_one
    reputation.started("q")
    assert reputation.score("q") > NEUTRAL


def test_a_lost_verdict_weighs_most() -> None:
    reputation = Reputation()
    for _ in range(10):
        reputation.started("p")
    reputation.verdict("p", won=False)
    good = 10 + PRIOR
    assert reputation.score("p") == pytest.approx(good / (good + PRIOR + VERDICT_WEIGHT))
    reputation.failed_to_start("q")
    reputation.lost("r")
    assert reputation.score("p") < 0.7 and score({"verdicts_lost": 1}) < min(reputation.score("q"), score({"lost": 1}))
    reputation.verdict("s", won=True)
    assert reputation.score("s") > NEUTRAL


def test_uptime_counts_for_little_and_is_capped() -> None:
    reputation = Reputation()
    reputation.disconnected("p", 3600 * 1000)
    assert NEUTRAL < reputation.score("p") < 0.7
    reputation.lost("p")
    reputation.lost("p")
    assert reputation.score("p") < NEUTRAL, "staying connected does not buy back lost activities"


def test_each_change_is_emitted_and_loaded_counters_give_the_same_score() -> None:
    saved: list[SaveReputation] = []
    reputation = Reputation(emit=saved.append)
    reputation.connected("p")
    reputation.started("p")
    reputation.lost("p")
    reputation.verdict("p", won=True)
    reputation.disconnected("p", 90.5)
    assert [s.provider for s in saved] == ["p"] * 4, "a connection alone writes nothing"
    assert saved[-1].counters == reputation.counters("p") and saved[-1].counters["connections"] == 1
    loaded = Reputation({s.provider: s.counters for s in saved})
    assert loaded.score("p") == reputation.score("p") and loaded.counters("p") == reputation.counters("p")
    assert "p" in loaded and "q" not in loaded
    assert Reputation({"p": {"lost": 1.0, "unknown": 5.0}}).counters("p")["lost"] == 1.0
