"""The hub's plain HTTP without a socket: the dashboard's sessions and the files it serves."""

from __future__ import annotations

from pathlib import Path

from kiln.hub.access import Viewer
from kiln.hub.io.http import MAX_DEPTH, Assets, Logins
from kiln.testing import FakeClock

ADMIN = Viewer(True, 3, "ops")
ALICE = Viewer(False, 7, "alice")


def test_a_session_stands_for_its_viewer_until_it_expires_is_closed_or_revoked() -> None:
    clock = FakeClock()
    logins = Logins(ttl=60, clock=clock.monotonic)
    ops, alice = logins.open(ADMIN), logins.open(ALICE)
    assert ops != alice and len(ops) >= 40
    assert (logins.find(ops), logins.find(alice), logins.find("forged")) == (ADMIN, ALICE, None)
    assert logins.credentials() == {3, 7}
    logins.revoke({7})
    assert logins.find(alice) is None and logins.find(ops) == ADMIN
    logins.close(ops)
    assert logins.find(ops) is None
    late = logins.open(ALICE)
    clock.advance(60)
    assert logins.find(late) is None and len(logins) == 0


def test_past_the_limit_the_oldest_session_is_forgotten() -> None:
    logins = Logins(limit=3)
    secrets = [logins.open(ALICE) for _ in range(4)]
    assert logins.find(secrets[0]) is None
    assert all(logins.find(secret) == ALICE for secret in secrets[1:])
    assert len(logins) == 3


def test_a_credential_past_its_share_forgets_its_own_oldest_session_not_anothers() -> None:
    logins = Logins(limit=4, each=2)
    ops = logins.open(ADMIN)
    flood = [logins.open(ALICE) for _ in range(10)]
    assert logins.find(ops) == ADMIN, "alice's logins cannot end the admin's session"
    assert [logins.find(secret) for secret in flood] == [None] * 8 + [ALICE, ALICE]
    assert len(logins) == 3


def test_only_plain_files_of_known_kinds_are_served_each_under_one_path(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "app.js").write_text("export {}")
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / ".secret.js").write_text("no")
    (tmp_path / "notes").write_text("no: no known ending")
    deep = tmp_path / "vendor"
    for _ in range(MAX_DEPTH):
        deep = deep / "deeper"
    deep.mkdir(parents=True)
    (tmp_path / "vendor" / "uPlot.min.css").write_text(".u{}")
    (tmp_path / "vendor" / "uPlot.LICENSE").write_text("MIT")
    (deep / "too-deep.js").write_text("no")
    assets = Assets(tmp_path)
    assert sorted(assets.files) == [
        "/",
        "/assets/app.js",
        "/assets/vendor/uPlot.LICENSE",
        "/assets/vendor/uPlot.min.css",
    ]
    assert assets.files["/"].content_type == "text/html; charset=utf-8"
    assert assets.files["/assets/app.js"].content_type == "text/javascript; charset=utf-8"
    assert assets.files["/assets/app.js"].body == b"export {}"
    assert assets.files["/"].etag != assets.files["/assets/app.js"].etag
    assert Assets(None).files == {}
