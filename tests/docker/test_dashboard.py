"""The hub's web dashboard in Chromium (Debian's, driven by Playwright) against a real hub with real
providers: login, the providers counted, an activity shown within 2 s of its rent and gone after
its release, a requestor credential seeing only its own, a job's timeline, no console errors, and a
screenshot of each page at 1280x800 and at a phone's 390x844 (under out/screenshots/, or
$KILN_ARTIFACTS/screenshots/).

One hub, two providers and one browser serve the whole module; the tests run in order (the last
takes the screenshots, once a job has run)."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
from prometheus_client.parser import text_string_to_metric_families

import kiln
from tests.conftest import IMAGE, Cluster, started
from tests.site import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
SHARED = "dashboard-shared-token"
SMALL = kiln.Demand(cpus=0.25, memory="64MiB")
WIDE = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PAGES = ("overview", "providers", "activities", "jobs", "images", "events")
T = TypeVar("T")


class Loop:
    """An event loop on a thread of its own: the requestor's, while Playwright's sync API drives
    the browser from the test's thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, work: Awaitable[T], timeout: float = 90) -> T:
        async def awaited() -> T:
            return await work

        return asyncio.run_coroutine_threadsafe(awaited(), self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class Hub:
    cluster: Cluster
    providers: list[str]
    tokens: dict[str, str]
    """Credentials by name: ``ops`` (an admin), ``alice`` and ``bob`` (requestors)."""
    loop: Loop
    requestors: dict[str, kiln.Requestor] = field(default_factory=dict)

    @property
    def http(self) -> str:
        return self.cluster.url.replace("ws://", "http://", 1)

    def requestor(self, name: str) -> kiln.Requestor:
        """A requestor connected with ``name``'s credential (one per name, kept for the module)."""
        if name not in self.requestors:
            self.requestors[name] = self.loop.run(kiln.connect(self.cluster.url, token=self.tokens[name], name=name))
        return self.requestors[name]


def create_token(data: Path, role: str, name: str) -> str:
    made = subprocess.run(
        [sys.executable, "-m", "kiln.cli", "token", "create", "--role", role, "--name", name, "--data-dir", str(data)],
        capture_output=True,
        text=True,
        check=True,
    )
    return made.stdout.splitlines()[-1]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[Hub]:
    logs = tmp_path_factory.mktemp("dashboard")
    data = logs / "hub-data"
    roles = {"ops": "admin", "alice": "requestor", "bob": "requestor"}
    tokens = {name: create_token(data, role, name) for name, role in roles.items()}
    cluster = Cluster(logs, suffix=f"-{secrets.token_hex(3)}", token=SHARED)
    with started(cluster, "--token", SHARED, "--data-dir", str(data)) as c:
        providers = [
            c.start_provider(name, "--token", SHARED, cpus=1, memory="1GiB", wait=False) for name in ("d1", "d2")
        ]
        c.wait_for_providers(set(providers))
        hub = Hub(c, providers, tokens, Loop())
        try:
            yield hub
        finally:
            for requestor in hub.requestors.values():
                hub.loop.run(requestor.close())
            hub.loop.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Dashboard:
    page: Page
    errors: list[str]

    def go(self, route: str) -> None:
        self.page.evaluate("route => { location.hash = route }", route)

    def text(self, selector: str) -> str:
        return self.page.text_content(selector) or ""


def designed(message: ConsoleMessage) -> bool:
    """The 401 a browser logs for a wrong token typed into the login form (the test types one).
    Anything else logged as an error is one."""
    url = message.location.get("url", "")
    return "status of 401" in message.text and url.endswith("/api/login")


@pytest.fixture
def dashboards(hub: Hub, browser: Browser) -> Iterator[Any]:
    """Opens dashboards logged in through the form; at the end, none logged an error."""
    opened: list[Dashboard] = []

    def open_as(name: str, viewport: dict[str, int] = WIDE, route: str = "#/overview") -> Dashboard:
        context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        page = context.new_page()
        errors: list[str] = []
        page.on(
            "console", lambda m: errors.append(f"{m.type}: {m.text}") if m.type == "error" and not designed(m) else None
        )
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        page.goto(f"{hub.http}/{route}")
        page.wait_for_selector("#token", state="visible")
        page.fill("#token", hub.tokens[name])
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#nav", state="visible")
        page.wait_for_selector("#live.up")
        dashboard = Dashboard(page, errors)
        opened.append(dashboard)
        return dashboard

    yield open_as
    try:
        assert [e for d in opened for e in d.errors] == []
    finally:
        for dashboard in opened:
            dashboard.page.context.close()


def test_the_dashboard_counts_the_providers_after_login(hub: Hub, browser: Browser, dashboards: Any) -> None:
    page = browser.new_page()
    try:
        page.goto(f"{hub.http}/")
        page.fill("#token", "not-a-token")
        page.click("#login-form button[type=submit]")
        page.wait_for_function("() => document.getElementById('login-error').textContent !== ''")
        assert page.text_content("#login-error") == "unknown or revoked token (a provider token shows nothing)"
        assert page.is_hidden("#nav")
    finally:
        page.close()
    ops = dashboards("ops")
    ops.page.wait_for_function("() => document.querySelector('#stat-providers .value')?.textContent === '2'")
    assert ops.text("#who") == "ops (admin)"
    ops.page.focus("#nav a[data-page=providers]")  # the pages are links: the keyboard reaches each
    ops.page.keyboard.press("Enter")
    ops.page.wait_for_selector("#providers-table tbody tr")
    assert ops.page.get_attribute("#nav a[data-page=providers]", "aria-current") == "page"
    names = ops.page.eval_on_selector_all("#providers-table tbody tr", "rows => rows.map(r => r.dataset.name)")
    assert names == sorted(hub.providers)
    ops.page.focus(".skip")  # the first stop of the keyboard: to the page shown, which stays
    ops.page.keyboard.press("Enter")
    assert ops.page.evaluate("[location.hash, document.activeElement.id]") == ["#/providers", "main"]
    assert ops.page.is_visible("#page-providers")


def test_a_rent_shows_within_2_s_to_its_requestor_and_admins_only(hub: Hub, dashboards: Any) -> None:
    ops, alice, bob = (dashboards(name, route="#/activities") for name in ("ops", "alice", "bob"))
    for dashboard in (ops, alice, bob):
        dashboard.page.wait_for_selector("#activities-table tbody tr.empty")
    requestor = hub.requestor("alice")
    activity: kiln.Activity = hub.loop.run(requestor.rent(IMAGE, SMALL))
    rented = time.monotonic()
    row = f'#activities-table tr[data-id="{activity.id}"]'
    for dashboard in (ops, alice):
        dashboard.page.wait_for_selector(row, timeout=max(1, 2000 - (time.monotonic() - rented) * 1000))
    print(f"the rent showed on both dashboards {time.monotonic() - rented:.2f} s after it was rented")
    assert alice.text(f"{row} td:nth-child(3)") == activity.provider
    assert alice.text(f"{row} td:nth-child(2)") == "alice"
    bob.page.wait_for_timeout(1000)  # a push that would show it has come by now
    assert bob.page.query_selector(row) is None
    assert bob.text("#activities-count") == "0 activities"
    hub.loop.run(activity.release())
    released = time.monotonic()
    for dashboard in (ops, alice):
        dashboard.page.wait_for_selector(row, state="detached", timeout=2000)
    print(f"and was gone {time.monotonic() - released:.2f} s after its release")


def test_what_containers_use_reaches_the_hub_from_the_providers(hub: Hub) -> None:
    """The providers' ``usage`` reports (every 5 s) are what the hub's "used" figures are made of."""
    requestor = hub.requestor("alice")
    activity: kiln.Activity = hub.loop.run(requestor.rent(IMAGE, SMALL))
    try:
        hub.loop.run(activity.run(["sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"]))
        deadline = time.monotonic() + 15
        used: dict[str, float] = {}
        while time.monotonic() < deadline:
            asked = urllib.request.Request(
                hub.http + "/metrics", headers={"Authorization": f"Bearer {hub.tokens['ops']}"}
            )
            with urllib.request.urlopen(asked, timeout=10) as reply:
                text = reply.read().decode()
            used = {
                sample.name: sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name in ("kiln_used_memory_bytes", "kiln_used_cpus")
            }
            if used.get("kiln_used_memory_bytes", 0) > 0:
                break
            time.sleep(0.5)
        assert used["kiln_used_memory_bytes"] > 0, used
    finally:
        hub.loop.run(activity.release())


async def square(act: kiln.Activity, n: int) -> int:
    done = await act.run(["sh", "-c", f"sleep 0.2; echo $(({n} * {n}))"])
    return int(done.stdout)


def test_the_jobs_page_draws_the_timeline_of_a_job_that_ran(hub: Hub, dashboards: Any) -> None:
    requestor = hub.requestor("alice")

    async def run() -> tuple[str, list[int]]:
        job = requestor.job(square, range(6), image=IMAGE, demand=SMALL)
        return job.group, await job.run()

    group, results = hub.loop.run(run())
    assert results == [n * n for n in range(6)]
    alice, bob = dashboards("alice", route="#/jobs"), dashboards("bob", route="#/jobs")
    alice.page.wait_for_selector(f'#jobs-table tr[data-group="{group}"]')
    alice.go(f"#/jobs/{group}")
    alice.page.wait_for_function("() => document.querySelectorAll('#gantt rect.bar').length >= 6")
    bars = alice.page.eval_on_selector_all("#gantt rect.bar", "bars => bars.map(b => b.getAttribute('class'))")
    assert bars.count("bar done") >= 6, bars
    lanes = alice.page.eval_on_selector_all("#gantt text.lane", "lanes => lanes.map(l => l.textContent)")
    assert set(lanes) <= set(hub.providers) and lanes
    bob.page.wait_for_selector("#jobs-table tbody tr")
    assert bob.page.query_selector(f'#jobs-table tr[data-group="{group}"]') is None


def screenshots() -> Path:
    folder = Path(os.environ.get("KILN_ARTIFACTS") or ROOT / "out") / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_every_page_renders_wide_and_on_a_phone(hub: Hub, dashboards: Any) -> None:
    folder = screenshots()
    shown = {
        "overview": "#charts .uplot",
        "providers": "#providers-table tbody tr[data-name]",
        "activities": "#activities-table tbody tr[data-id]",
        "jobs": "#gantt",
        "images": "#images-table tbody tr[data-digest]",
        "events": "#events li.event",
    }
    requestor = hub.requestor("alice")
    hub.loop.run(requestor.push_image(IMAGE))
    assert hub.loop.run(requestor.map(square, range(2), image=IMAGE, demand=SMALL)) == [0, 1]  # a job for #gantt
    activity: kiln.Activity = hub.loop.run(requestor.rent(IMAGE, SMALL))
    for size, viewport in (("1280x800", WIDE), ("390x844", PHONE)):
        ops = dashboards("ops", viewport)
        for name in PAGES:
            ops.go(f"#/{name}")
            ops.page.wait_for_selector(f"#page-{name}:not([hidden]) >> nth=0")
            ops.page.wait_for_selector(shown[name])
            ops.page.screenshot(path=str(folder / f"{name}-{size}.png"), full_page=True)
            wide = ops.page.evaluate("() => document.documentElement.scrollWidth")
            assert wide <= viewport["width"], f"{name} at {size} scrolls sideways ({wide} px)"
        hidden = ops.page.eval_on_selector_all(
            "#nav a",
            f"links => links.filter(a => a.getBoundingClientRect().right > {viewport['width']})"
            ".map(a => a.textContent)",
        )
        assert hidden == [], f"at {size} the header hides {hidden}"
    hub.loop.run(activity.release())
    assert {p.name for p in folder.glob("*.png")} >= {f"{n}-{s}.png" for n in PAGES for s in ("1280x800", "390x844")}
