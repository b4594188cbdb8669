"""A web server on loopback for the browser tests: a few fixed pages, and js-client's sources
under ``/kiln-client/`` (as a page imports the browser entry). Nothing else is served. And
:func:`page_run`: such a page opened in Chromium until it says it is done."""

from __future__ import annotations

import contextlib
import mimetypes
import threading
from collections.abc import Iterator, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

CLIENT = Path(__file__).resolve().parent.parent / "js-client" / "src"
CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium, which Playwright drives (its own browser download is impossible here)."""
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

Page = tuple[bytes, str]
"""A page's body and its content type."""


def _file(path: str) -> Page | None:
    """``/kiln-client/...``: a file of js-client/src, never one outside it."""
    file = (CLIENT / path.removeprefix("/kiln-client/")).resolve()
    if not path.startswith("/kiln-client/") or not file.is_relative_to(CLIENT) or not file.is_file():
        return None
    kind = "text/javascript" if file.suffix == ".js" else mimetypes.guess_type(file.name)[0] or "text/plain"
    return file.read_bytes(), kind


@contextlib.contextmanager
def serve(pages: Mapping[str, Page]) -> Iterator[str]:
    """Serve ``pages`` (by path) and js-client/src until the block ends; yields the base URL."""

    class Site(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            found = pages.get(path) or _file(path)
            if found is None:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            body, kind = found
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the tests report what matters

    server = ThreadingHTTPServer(("127.0.0.1", 0), Site)
    thread = threading.Thread(target=server.serve_forever, name="kiln-test-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def page_run(url: str, ids: Sequence[str], *, timeout_ms: int = 60_000) -> tuple[dict[str, str], list[str]]:
    """Open ``url`` in Chromium, wait until the page's ``#status`` starts with ``done`` or ``failed``,
    and return the text of ``#status`` and of each element of ``ids`` (``""`` when empty), with
    the console's messages (``type: text``) for the failure messages."""
    from playwright.sync_api import ConsoleMessage, sync_playwright

    if not CHROMIUM.exists():
        raise AssertionError(f"{CHROMIUM} is missing: apt-get install -y chromium")
    console: list[str] = []

    def keep(message: ConsoleMessage) -> None:
        console.append(f"{message.type}: {message.text}")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", keep)
            page.goto(url)
            page.wait_for_function(
                "() => /^(done|failed)/.test(document.getElementById('status').textContent)", timeout=timeout_ms
            )
            texts = {name: page.text_content(f"#{name}") or "" for name in ("status", *ids)}
        finally:
            browser.close()
    return texts, console
