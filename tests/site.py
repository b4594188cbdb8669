"""A web server on loopback for the browser tests: a few fixed pages, and js-client's sources
under ``/kiln-client/`` (as a page imports the browser entry). Nothing else is served."""

from __future__ import annotations

import contextlib
import mimetypes
import threading
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

CLIENT = Path(__file__).resolve().parent.parent / "js-client" / "src"

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
