"""A PostgreSQL server of its own on this machine, for tests and benchmarks.

::

    with LocalPostgres(Path("out/pg")) as pg:
        url = pg.create_database("bench")  # postgresql://kiln@127.0.0.1:PORT/bench
        ...  # kiln hub --db url

It runs Debian's ``postgresql`` binaries (``make postgres`` installs them) from
``/usr/lib/postgresql/<version>/bin``: ``initdb`` with trust authentication for the superuser
``kiln``, then ``pg_ctl start`` on 127.0.0.1 and a free port, no Unix socket. PostgreSQL refuses
to run as root, so under root both run as the ``postgres`` system user; its data directory is then
a fresh folder in the system's temporary directory (that user cannot enter root's private
folders, such as pytest's ``tmp_path``), removed on exit. The server's log stays in ``root/log``.

Unless ``durable``, the server does not sync to disk (``fsync``, ``synchronous_commit`` and
``full_page_writes`` off): what a test's data is worth, and a commit costs a third to a half of a
synced one (0.03-0.04 ms against 0.09 ms on this machine's disk, more on a slow one). A benchmark
whose figures should hold for a real deployment passes ``durable=True``.

A harness in another language (js-client's tests) runs ``python -m kiln.testing.postgres ROOT``:
it starts a server in ROOT, prints the URL of a fresh database on one line of its stdout, and
stops the server when its stdin closes or on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Final

import psycopg
from psycopg import sql

from kiln.protocol.errors import KilnError

SUPERUSER: Final = "kiln"
BINARIES: Final = Path("/usr/lib/postgresql")
INITDB_FLAGS: Final = (f"--username={SUPERUSER}", "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync")
SERVER_SETTINGS: Final = ("listen_addresses=127.0.0.1", "unix_socket_directories=''")
NO_SYNC: Final = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
START_TIMEOUT: Final = 60
PORT_ATTEMPTS: Final = 3
LOG_TAIL: Final = 4000
TEMPLATE: Final = "template0"
"""What :meth:`LocalPostgres.create_database` copies. A template of our own would be no faster: an empty
one holds the same files (about 7 MB of catalog), and copying them is the whole cost (measured: 30 to
100 ms, the same for either, on two busy cores). No test can change template0, as it could template1."""


class PostgresNotInstalled(KilnError):
    """No ``initdb`` under /usr/lib/postgresql/*/bin: ``make postgres`` installs Debian's package."""


def find_binaries() -> Path:
    """The ``bin`` folder of the newest PostgreSQL installed by Debian's packages."""
    found = sorted(
        BINARIES.glob("*/bin/initdb"), key=lambda p: [int(n) for n in p.parent.parent.name.split(".")], reverse=True
    )
    if not found:
        raise PostgresNotInstalled(f"PostgreSQL is not installed (no {BINARIES}/*/bin/initdb): run make postgres")
    return found[0].parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalPostgres:
    """A PostgreSQL server started on entering the block and stopped (``pg_ctl stop -m fast``) on leaving it.

    After entering: :attr:`url` reaches its ``postgres`` database as the superuser, and
    :meth:`create_database` makes a fresh, empty database and returns its URL.
    """

    def __init__(self, root: Path, *, durable: bool = False) -> None:
        self.root = root
        self.durable = durable
        self.log = root / "log"
        self.port = 0
        self._bin = find_binaries()
        self._user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self._data: Path | None = None

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (empty: a copy of ``template0``) and return its URL."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(TEMPLATE))
            )
        return self.database_url(name)

    def __enter__(self) -> LocalPostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        self._data = Path(tempfile.mkdtemp(prefix="kiln-postgres-")) if self._user else self.root / "data"
        try:
            if self._user:
                os.chown(self._data, self._user.pw_uid, self._user.pw_gid)
            self._run("initdb", f"--pgdata={self._data}", *INITDB_FLAGS)
            self._start()
        except BaseException:
            self._remove_data()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the server (its connections are cut) and remove its data directory if it is a temporary one."""
        if self._data is not None and (self._data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", f"--pgdata={self._data}", "--mode=fast", "--wait")
        self._remove_data()

    def _start(self) -> None:
        """``pg_ctl start`` on a free port: another process may take the port between our look and the
        server's bind, so a failed start is tried again on another."""
        settings = SERVER_SETTINGS if self.durable else (*SERVER_SETTINGS, *NO_SYNC)
        options = " ".join(f"-c {setting}" for setting in settings)
        start = ("start", f"--pgdata={self._data}", "--wait", f"--timeout={START_TIMEOUT}")
        for attempt in range(PORT_ATTEMPTS):
            self.port = free_port()
            try:
                self._run("pg_ctl", *start, f"--options={options} -p {self.port}")
                return
            except KilnError:
                if attempt == PORT_ATTEMPTS - 1:
                    raise

    def _run(self, program: str, *args: str) -> None:
        """Run one of PostgreSQL's programs as the server's user, its output (and the server's) to the log."""
        with self.log.open("ab") as out:
            done = subprocess.run(
                [str(self._bin / program), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self._data.parent if self._data else None,
                user=self._user.pw_uid if self._user else None,
                group=self._user.pw_gid if self._user else None,
                extra_groups=[] if self._user else None,
                check=False,
            )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-LOG_TAIL:]
            raise KilnError(f"{program} failed ({done.returncode}); the end of its log, {self.log}:\n{log}")

    def _remove_data(self) -> None:
        if self._user and self._data is not None:
            shutil.rmtree(self._data, ignore_errors=True)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until stdin closes or a SIGTERM or SIGINT comes; the URL of database ``kiln`` on stdout."""
    parser = argparse.ArgumentParser(
        prog="python -m kiln.testing.postgres",
        description="Start a PostgreSQL server in ROOT, print the URL of a fresh database, "
        "stop the server when stdin closes or on SIGTERM.",
    )
    parser.add_argument("root", type=Path, help="where the server's log (and, unless root, its data) go")
    root: Path = parser.parse_args(argv).root
    # Raised as SystemExit, the signal leaves the blocking read below and the block stops the server.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        with LocalPostgres(root) as server:
            print(server.create_database("kiln"), flush=True)
            while sys.stdin.buffer.read(4096):
                pass  # what the harness writes means nothing: only the end of stdin counts
    except KilnError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
