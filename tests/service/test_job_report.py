"""A job's report, end to end: a job runs on a real hub (on a real port, in this process so
that its core can be read) and simulated providers (no Docker), one task is retried for what a
provider sent back (hostile markup), ``map(report=...)`` writes the HTML file, and Chromium
(Debian's, driven by Playwright) opens it: every task has its bar, the retry shows its reason
as text, no script runs, nothing is fetched, no console error. The hub heard every attempt."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from playwright.async_api import ConsoleMessage, Request, async_playwright

import kiln
from kiln.hub.core import HubCore
from kiln.hub.io.server import start
from kiln.hub.jobs import JobRecord
from kiln.testing.simulated import Served, simulated_providers

pytestmark = pytest.mark.timeout(90)

IMAGE = "kiln-busybox:latest"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
TASKS = 12
HOSTILE = b'<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
OUTPUT = "/golem/output/answer.txt"


async def settled(core: HubCore) -> JobRecord:
    """The hub's record of the one job, once every attempt it heard of has ended (the reports
    go without waiting: the last may arrive after the job)."""
    async with asyncio.timeout(10):
        while True:
            records = list(core.jobs)
            if len(records) == 1 and records[0].done + records[0].failed == TASKS and records[0].running == 0:
                return records[0]
            await asyncio.sleep(0.05)


@pytest.fixture
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    return CHROMIUM


async def test_a_jobs_report_opens_in_chromium_and_shows_every_task(tmp_path: Path, chromium_path: Path) -> None:
    report = tmp_path / "job.html"
    retried: set[int] = set()

    async def worker(act: kiln.Activity, n: int) -> int:
        await act.run(["echo", str(n)])
        said = await act.download_bytes(OUTPUT)
        if n == 5 and n not in retried:
            retried.add(n)
            raise kiln.RetryTask(f"the provider said {said.decode()}")
        return n

    core = HubCore()
    async with start("127.0.0.1", 0, data_dir=tmp_path / "hub", core=core) as server:
        url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
        files = {OUTPUT: Served("file", HOSTILE)}
        async with simulated_providers(url, 3, files=files) as names, kiln.connect(url) as requestor:
            results = await requestor.map(worker, range(TASKS), image=IMAGE, max_providers=3, report=report)
        heard = await settled(core)
    assert results == list(range(TASKS))
    assert (heard.done, heard.retried, heard.failed, heard.running) == (TASKS, 1, 0, 0), "the hub heard every attempt"
    assert sorted(a.task for a in heard.attempts if a.state == "done") == list(range(TASKS))
    page_text = report.read_text()
    assert "<script>window" not in page_text

    errors: list[str] = []
    fetched: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})

            def on_console(message: ConsoleMessage) -> None:
                if message.type == "error":
                    errors.append(message.text)

            def on_request(request: Request) -> None:
                if not request.url.startswith("file:"):
                    fetched.append(request.url)

            page.on("console", on_console)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", on_request)
            await page.goto(report.as_uri())
            await page.wait_for_load_state("load")

            shown = await page.eval_on_selector_all(
                "svg rect.bar", "bars => bars.map(b => [b.dataset.task, b.getBoundingClientRect().width])"
            )
            done = await page.eval_on_selector_all("svg rect.bar.done", "bars => bars.map(b => Number(b.dataset.task))")
            reasons = await page.eval_on_selector_all("td.reason", "cells => cells.map(c => c.textContent)")
            rows = await page.eval_on_selector_all("svg > text title", "titles => titles.map(t => t.textContent)")
            pwned = await page.evaluate("window.pwned")
            if artifacts := os.environ.get("KILN_ARTIFACTS"):
                await page.screenshot(path=str(Path(artifacts) / "job-report.png"), full_page=True)
        finally:
            await browser.close()

    assert sorted(done) == list(range(TASKS)), "every task has a bar of its done attempt"
    assert len(shown) == TASKS + 1 and all(width > 0 for _, width in shown), "one bar per attempt, each visible"
    assert f"RetryTask: the provider said {HOSTILE.decode()}" in reasons, "the reason shows as text"
    assert set(rows) <= set(names) and rows, "a row per provider that ran an attempt"
    assert pwned is None, "no markup a provider sent ran"
    assert fetched == [] and errors == []
