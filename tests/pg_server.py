"""A throw-away PostgreSQL server for tests (the PostgreSQL variants of the key store, the trace
store and durable runs): Debian's ``postgresql`` package (``apt-get install -y postgresql``)
started in a temporary folder, on a unix socket only, with trust authentication; run as the
``postgres`` user when the tests run as root (PostgreSQL refuses root). :func:`postgres_server` raises :class:`Unavailable` with the
reason when it cannot start, which the fixtures turn into a skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


class Unavailable(Exception):
    """PostgreSQL cannot be started here; the message says why."""


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(
        f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise Unavailable(f"PostgreSQL's {name} is not installed (apt-get install -y postgresql)")
    return found


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yield the URL of its ``postgres`` database; stop and remove it after."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise Unavailable("psycopg is not installed (pip install 'psycopg[binary]')") from None
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    prefix: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="orchestra-pg-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable("running as root and there is no 'postgres' user to run "
                              "PostgreSQL as") from None
        os.chown(folder, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, log = folder / "data", folder / "server.log"
    started = False
    try:
        for cmd in ([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                     "--no-sync"],
                    [pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
                     f"-k {folder} -c listen_addresses='' -c fsync=off", "start"]):
            p = subprocess.run(prefix + cmd, capture_output=True, text=True, timeout=120,
                               check=False)
            if p.returncode != 0:
                tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
                raise Unavailable(f"{Path(cmd[0]).name} failed: {' / '.join(tail)}")
            started = "start" in cmd
        yield f"postgresql://postgres@/postgres?host={folder}"
    finally:
        if started:
            subprocess.run(prefix + [pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(server_url: str, prefix: str = "keys") -> str:
    """A new empty database on the server: its URL."""
    import psycopg

    name = f"{prefix}_" + secrets.token_hex(6)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server_url.replace("/postgres?", f"/{name}?")


def serve_or_skip(what: str = "key store") -> Iterator[str]:
    """The body of a session fixture: a server's URL, or a skip that says why there is none
    (``what``: what goes untested, for the reason)."""
    try:
        with postgres_server() as url:
            yield url
    except Unavailable as e:
        pytest.skip(f"PostgreSQL {what} not tested: {e}")
