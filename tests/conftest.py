"""Shared fixtures: an isolated data dir, no network beyond loopback, the shared data folder."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
REPO = Path(__file__).resolve().parent.parent
# The project's recorded benchmark data lives beside the checkout. The library only looks where
# it is told ($ORCHESTRA_DATA_DIR / $ORCHESTRA_SHARED_DATA), so tell it, before anything imports
# orchestra; subprocesses (the CLI, Ray workers) inherit it.
if not os.environ.get("ORCHESTRA_SHARED_DATA") and (REPO.parent / "shared" / "data").is_dir():
    os.environ["ORCHESTRA_SHARED_DATA"] = str(REPO.parent / "shared" / "data")


def shared_data_dir() -> Path | None:
    """``$ORCHESTRA_SHARED_DATA`` (by default ``<repo>/../shared/data``) when present."""
    env = os.environ.get("ORCHESTRA_SHARED_DATA")
    p = Path(env) if env else None
    return p if p is not None and p.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    p = shared_data_dir()
    if p is None:
        pytest.skip("shared data folder (../shared/data) is absent: set ORCHESTRA_SHARED_DATA")
    return p


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Traces and checkpoints of the tests go to a temporary folder, never the user's."""
    home = tmp_path_factory.mktemp("orchestra-home")
    os.environ["ORCHESTRA_HOME"] = str(home)
    os.environ.pop("ORCHESTRA_TRACE_DB", None)


_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: object) -> object:
    host = address[0] if isinstance(address, tuple) else address
    loopback = isinstance(host, str) and (host.startswith("127.")
                                          or host in ("localhost", "::1", "0.0.0.0"))
    if isinstance(host, str) and self.family in (socket.AF_INET, socket.AF_INET6) and not loopback:
        raise RuntimeError(f"tests may not reach the network (tried {address!r})")
    return _real_connect(self, address)  # type: ignore[arg-type]


@pytest.fixture(autouse=True, scope="session")
def _no_network() -> None:
    """Forbid connections beyond loopback: every test runs offline, as CI does."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """One throw-away PostgreSQL server for the session (tests/pg_server.py): the URL of its
    ``postgres`` database (take a fresh one per test with ``pg_server.fresh_database``), or a
    skip that says why it cannot start."""
    from pg_server import serve_or_skip

    yield from serve_or_skip("trace store and durable runs")
