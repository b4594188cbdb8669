"""Every Python and JavaScript block of the quickstart, the tutorials and the README runs against
a real hub and real providers, the web page tutorial's in Chromium (the conventions and the counts:
tests/unit/test_docs.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_docs import BLOCKS, HUB_IN_DOCS, ROOT, Block, check_run

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def docs_cluster(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> Iterator[str]:
    """One hub and two providers for every block (a job's blocks use two); yields the hub's URL."""
    import secrets

    from tests.conftest import Cluster, started

    with started(Cluster(tmp_path_factory.mktemp("docs"), suffix=f"-{secrets.token_hex(3)}")) as cluster:
        cluster.start_provider("docs1", cpus=2, memory="2GiB", wait=False)
        cluster.start_provider("docs2", cpus=2, memory="2GiB", wait=False)
        cluster.wait_for_providers(set(cluster.providers))
        yield cluster.url


def run_block(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.timeout(240)
@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind != "browser"], ids=lambda b: b.id)
def test_the_block_runs(block: Block, docs_cluster: str, tmp_path: Path) -> None:
    code = block.code.replace(HUB_IN_DOCS, docs_cluster)
    env = dict(os.environ)
    if block.kind == "python":
        paths = [str(ROOT / "python"), str(ROOT / "provider_runtime"), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        (tmp_path / "step.py").write_text(code)
        returncode, output = run_block([sys.executable, "step.py"], tmp_path, env)
    else:
        # ESM ignores NODE_PATH: the package resolves through node_modules, as in a user's project.
        (tmp_path / "node_modules").mkdir()
        (tmp_path / "node_modules" / "kiln-client").symlink_to(ROOT / "js-client", target_is_directory=True)
        (tmp_path / "step.mjs").write_text(code)
        returncode, output = run_block(["node", "step.mjs"], tmp_path, env)
    check_run(block, returncode, output)


HARNESS = """<!doctype html>
<html><head><meta charset="utf-8">
<script type="importmap">{ "imports": { "kiln-client": "/kiln-client/browser.js" } }</script>
</head><body><script type="module">
import("/block.js").then(() => { window.docsTest = "done"; },
                         (e) => { console.error(String(e && e.stack || e)); window.docsTest = "failed"; });
</script></body></html>
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "browser"], ids=lambda b: b.id)
def test_the_block_runs_in_chromium(block: Block, docs_cluster: str) -> None:
    from playwright.sync_api import ConsoleMessage, sync_playwright

    from tests.site import CHROMIUM, CHROMIUM_ARGS, serve

    pages = {
        "/": (HARNESS.encode(), "text/html"),
        "/block.js": (block.code.replace(HUB_IN_DOCS, docs_cluster).encode(), "text/javascript"),
    }
    console: list[str] = []
    with serve(pages) as site, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()

            def keep(message: ConsoleMessage) -> None:
                console.append(message.text)

            page.on("console", keep)
            page.goto(f"{site}/")
            page.wait_for_function("() => window.docsTest !== undefined", timeout=120_000)
            status = page.evaluate("() => window.docsTest")
        finally:
            browser.close()
    check_run(block, 0 if status == "done" else 1, "\n".join(console))
