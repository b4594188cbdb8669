"""A hub's seat among the hubs of one PostgreSQL (kiln.hub.io.state: join, claim_provider): what a
hub SIGKILLed and started again on its --data-dir gives back. The hubs and providers as processes:
tests/hostile/test_chaos_hubs.py."""

from __future__ import annotations

from kiln.hub.io.state import HubState


def test_a_hub_started_again_lets_go_of_the_providers_its_killed_run_held(postgres_url: str) -> None:
    with HubState(postgres_url, hub="b") as killed, HubState(postgres_url, hub="a") as other:
        killed.join("ws://127.0.0.1:1", "b-secret")
        other.join("ws://127.0.0.1:2", "a-secret")
        assert killed.claim_provider("p")
        assert not other.claim_provider("p"), "a live hub holds it"
        # Hub b is killed (it never leaves) and started again at once, under its id: it holds no
        # provider's connection, so the provider, dialling hub a meanwhile, is a's to take.
        with HubState(postgres_url, hub="b") as again:
            again.join("ws://127.0.0.1:1", "b-secret-2")
            assert other.claim_provider("p")
            assert not again.claim_provider("p")
