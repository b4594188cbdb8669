"""Plain HTTP on a real hub's port: health, /metrics and who may read it, the dashboard's login and
live gate; the metrics parsed with prometheus_client's own parser while a job runs on simulated providers."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

import kiln
from kiln.hub.gate import FAILED_HELLOS
from kiln.hub.io import server as hub_server
from kiln.hub.io.server import start
from kiln.hub.io.state import HubState
from kiln.hub.io.tls import server_context
from kiln.testing.simulated import simulated_providers
from tests.tls import Certificates

SHARED = "shared-t0ken"
IMAGE = "kiln-busybox:latest"
NAME = re.compile(r"(kiln|process)_[a-z0-9_]+")
UNITS = ("_bytes", "_seconds", "_cpus", "_credits")
"""What a kiln_ quantity is counted in, when its name says a unit (before ``_total``)."""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Hub:
    base: str  # http://127.0.0.1:PORT
    data_dir: Path
    requestor: str
    admin: str
    provider: str

    async def get(self, path: str, token: str | None = None, cookie: str | None = None) -> Reply:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        if cookie is not None:
            headers["Cookie"] = cookie
        return await asyncio.to_thread(fetch, self.base + path, headers)


def fetch(url: str, headers: dict[str, str]) -> Reply:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as reply:
            return Reply(reply.status, dict(reply.headers), reply.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, dict(e.headers), e.read())


@pytest.fixture
async def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Hub]:
    monkeypatch.setattr(hub_server, "REVOCATION_CHECK", 0.1)
    with HubState.in_dir(tmp_path) as state:
        tokens = [state.create("requestor", "alice")[1], state.create("admin")[1], state.create("provider", "p1")[1]]
    async with start("127.0.0.1", 0, token=SHARED, data_dir=tmp_path) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield Hub(f"http://127.0.0.1:{port}", tmp_path, *tokens)


async def raw(base: str, request: bytes) -> bytes:
    """What the hub answers ``request`` sent as is on a fresh connection (its status line and headers)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    reply = await reader.read()
    writer.close()
    return reply


async def test_health_is_open_and_anything_unknown_is_404_beside_the_hubs_peers(hub: Hub) -> None:
    health = await hub.get("/healthz")
    assert (health.status, health.body) == (200, b"ok\n")
    assert health.headers["X-Content-Type-Options"] == "nosniff"
    page = await hub.get("/")  # the dashboard's page, to anyone: its data needs a login
    assert page.status == 200 and b'src="/assets/app.js"' in page.body
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy, policy
    for path in (
        "/nothing",
        "/assets/../hub.db",
        "/assets/%2e%2e/%2e%2e/hub.db",
        "/assets/__init__.py",
        "//etc/passwd",
    ):
        assert (await hub.get(path, SHARED)).status == 404, path
    deleted = await raw(hub.base, b"DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert deleted.startswith(b"HTTP/1.1 405"), deleted
    with_body = await raw(hub.base, b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert not with_body.startswith(b"HTTP/1.1 200"), "a request with a body is refused, its body unread"
    async with kiln.connect(hub.base.replace("http", "ws"), token=SHARED) as requestor:
        assert await requestor.market() == [], "peers still upgrade on the same port"


async def test_metrics_need_an_admin_by_bearer_token_or_session(hub: Hub) -> None:
    refused = await hub.get("/metrics")
    assert refused.status == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await hub.get("/metrics", "wrong")).status == 401
    assert (await hub.get("/metrics", hub.provider)).status == 401, "a provider credential shows nothing"
    assert (await hub.get("/metrics", hub.requestor)).status == 403, "a requestor sees its own, not the hub's"
    for token in (hub.admin, SHARED):
        scraped = await hub.get("/metrics", token)
        assert scraped.status == 200 and scraped.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert b"kiln_providers 0.0" in scraped.body

    nobody = await hub.get("/api/me")
    assert (nobody.status, nobody.body) == (200, b"null")  # the page shows its login: no error logged
    assert (await hub.get("/api/login", "wrong")).status == 401
    login = await hub.get("/api/login", hub.admin)
    assert login.status == 204
    cookie = login.headers["Set-Cookie"].split(";")[0]
    assert cookie.startswith("kiln_session=") and "HttpOnly" in login.headers["Set-Cookie"]
    assert "SameSite=Strict" in login.headers["Set-Cookie"]
    assert json.loads((await hub.get("/api/me", cookie=cookie)).body) == {"admin": True, "name": "admin"}
    assert (await hub.get("/metrics", cookie=cookie)).status == 200
    assert (await hub.get("/api/logout", cookie=cookie)).status == 204
    assert (await hub.get("/api/me", cookie=cookie)).body == b"null", "logged out"

    alice = (await hub.get("/api/login", hub.requestor)).headers["Set-Cookie"].split(";")[0]
    assert json.loads((await hub.get("/api/me", cookie=alice)).body) == {"admin": False, "name": "alice"}
    assert (await hub.get("/metrics", cookie=alice)).status == 403
    ws = hub.base.replace("http", "ws") + "/api/live"
    with pytest.raises(InvalidStatus) as anonymous:
        await connect(ws)
    assert anonymous.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as elsewhere:
        await connect(ws, additional_headers={"Cookie": alice}, origin=Origin("http://evil.example"))
    assert elsewhere.value.response.status_code == 403
    own = hub.base.removeprefix("http://")
    async with connect(ws, additional_headers={"Cookie": alice}, origin=Origin(f"http://{own}")):
        for _ in range(50):  # counted once the hub serves it, just after the upgrade
            viewers = metric(scrape((await hub.get("/metrics", SHARED)).body), "kiln_dashboard_viewers")
            if viewers == 1:
                break
            await asyncio.sleep(0.05)
        assert viewers == 1
    with HubState.in_dir(hub.data_dir) as state:
        state.revoke("alice")
    for _ in range(50):
        if (await hub.get("/api/me", cookie=alice)).body == b"null":
            break
        await asyncio.sleep(0.1)
    assert (await hub.get("/api/me", cookie=alice)).body == b"null", "a revoked credential's session ends"


async def test_tokens_are_guessed_over_http_no_faster_than_in_hellos(hub: Hub) -> None:
    for _ in range(FAILED_HELLOS + 5):
        assert (await hub.get("/metrics", hub.provider)).status == 401, "a provider's token is no guess"
    assert (await hub.get("/metrics", SHARED)).status == 200
    for i in range(FAILED_HELLOS):
        assert (await hub.get("/api/login" if i % 2 else "/metrics", f"guess-{i}")).status == 401
    refused = await hub.get("/api/me", SHARED)
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1, "the right token too, for a while"
    with pytest.raises(kiln.KilnError, match="4009"):
        async with kiln.connect(hub.base.replace("http", "ws"), token=SHARED):
            pass
    assert (await hub.get("/healthz")).status == 200


def scrape(text: bytes) -> dict[str, list[Sample]]:
    """The samples of each metric family of a scrape, parsed by prometheus_client (which refuses bad text)."""
    return {family.name: family.samples for family in text_string_to_metric_families(text.decode())} | {
        f"{family.name}:type": [Sample(family.type, {}, 0)] for family in text_string_to_metric_families(text.decode())
    }


def metric(families: dict[str, list[Sample]], name: str, **labels: str) -> float:
    """The value of the one sample of ``name`` (a counter's with ``_total``) with ``labels``."""
    family = name.removesuffix("_total")
    values = [s.value for s in families[family] if s.name == name and s.labels == labels]
    assert len(values) == 1, (name, labels, families[family])
    return values[0]


def check_names(text: bytes) -> None:
    """Every family is named as Prometheus asks: a kiln_ or process_ prefix, counters in ``_total``,
    histograms with their buckets up to +Inf, and labels only from the fixed sets."""
    for family in text_string_to_metric_families(text.decode()):
        assert NAME.fullmatch(family.name), family.name
        assert family.documentation, f"{family.name} has no help"
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name in (f"{family.name}_total", f"{family.name}_created"), sample.name
            elif family.type == "histogram":
                assert sample.name.removeprefix(family.name) in ("_bucket", "_sum", "_count", "_created")
            else:
                assert sample.name == family.name and not family.name.endswith("_total"), sample.name
            assert set(sample.labels) <= {"version", "protocol", "state", "result", "direction", "role", "reason", "le"}
        if family.type == "histogram":
            assert any(s.labels.get("le") == "+Inf" for s in family.samples), family.name


async def test_metric_names_follow_the_conventions_and_move_with_a_job(tmp_path: Path) -> None:
    async with start("127.0.0.1", 0, token=SHARED, data_dir=tmp_path, public_metrics=True) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"ws://127.0.0.1:{port}"
        metrics = f"http://127.0.0.1:{port}/metrics"

        async def scraped() -> dict[str, list[Sample]]:
            reply = await asyncio.to_thread(fetch, metrics, {})
            assert reply.status == 200, "public: no credential needed"
            check_names(reply.body)
            return scrape(reply.body)

        before = await scraped()
        assert metric(before, "kiln_build_info", version=kiln.__version__, protocol="1.7") == 1
        assert metric(before, "process_resident_memory_bytes") > 0
        async with simulated_providers(url, 3, token=SHARED, cpus=2), kiln.connect(url, token=SHARED) as requestor:
            idle = await scraped()
            assert metric(idle, "kiln_providers") == 3 and metric(idle, "kiln_requestors") == 1
            assert (metric(idle, "kiln_offered_cpus"), metric(idle, "kiln_rented_cpus")) == (6, 0)
            async with requestor.rent(IMAGE, kiln.Demand(cpus=1)) as act:
                assert (await act.run(["true"])).exit_code == 0
                busy = await scraped()
                assert metric(busy, "kiln_activities", state="ready") == 1
                assert metric(busy, "kiln_rented_cpus") == 1
                assert metric(busy, "kiln_rented_memory_bytes") > 0
        with pytest.raises(kiln.Unauthorized):
            async with kiln.connect(url, token="wrong"):
                pass
        for _ in range(50):  # the hub sees the providers go as their connections end, a moment after they close
            after = await scraped()
            if metric(after, "kiln_providers") == 0:
                break
            await asyncio.sleep(0.05)
        assert metric(after, "kiln_providers") == 0 and metric(after, "kiln_activities", state="ready") == 0
        moved = {
            ("kiln_rents_total", ("result", "ok")): 1,
            ("kiln_rent_duration_seconds_count", None): 1,
            ("kiln_commands_total", None): 1,
            ("kiln_command_failures_total", None): 0,
            ("kiln_connections_total", ("role", "provider")): 3,
            ("kiln_connections_total", ("role", "requestor")): 1,
            ("kiln_connections_refused_total", ("reason", "unauthorized")): 1,
        }
        for (name, label), expected in moved.items():
            labels = dict([label]) if label else {}
            was = counted(before, name, labels)
            assert counted(after, name, labels) - was == expected, (name, label)
        assert 0 < counted(after, "kiln_rent_duration_seconds_sum", {}) < 5


def counted(families: dict[str, list[Sample]], name: str, labels: dict[str, str]) -> float:
    """A counter's (or a histogram's count's) value, 0 when it has no sample for ``labels`` yet."""
    samples = [s.value for family in families.values() for s in family if s.name == name and s.labels == labels]
    return samples[0] if samples else 0.0


async def test_under_tls_the_same_port_answers_https_and_the_session_cookie_is_secure(
    tmp_path: Path, tls: Certificates
) -> None:
    async with start("127.0.0.1", 0, token=SHARED, data_dir=tmp_path, ssl=server_context(tls.cert, tls.key)) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        trusted = ssl.create_default_context(cafile=str(tls.ca))

        def get(path: str, headers: dict[str, str]) -> tuple[int, str]:
            request = urllib.request.Request(f"https://127.0.0.1:{port}{path}", headers=headers)
            with urllib.request.urlopen(request, timeout=10, context=trusted) as reply:
                return reply.status, reply.headers.get("Set-Cookie", "")

        assert await asyncio.to_thread(get, "/healthz", {}) == (200, "")
        status, cookie = await asyncio.to_thread(get, "/api/login", {"Authorization": f"Bearer {SHARED}"})
        assert status == 204 and cookie.endswith("; Secure")
