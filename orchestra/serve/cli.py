"""``orchestra serve``: run the OpenAI-compatible server (:mod:`orchestra.serve.app`) on uvicorn.

The lead CLI mounts :func:`serve_command` lazily; a :class:`~orchestra.errors.UserError` (bad
pool or policy, a public address without keys, port in use) reaches the CLI's entry point, which
prints it as one line.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestra.errors import UserError

__all__ = ["check_bind", "serve_command", "serve_pool"]

#: ``--pool replay:DATA``: a replay pool over recorded outcomes instead of a pool file.
REPLAY = "replay:"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keys: str | None) -> None:
    """Refuse to listen beyond this machine without API keys: anyone who reaches the port
    would spend the pool's provider credits."""
    if not is_loopback(host) and keys is None:
        raise UserError(f"--host {host!r} lets other machines reach the server; give --keys "
                        "PATH (a key store: every request then needs a key, with its budget), "
                        "or bind 127.0.0.1")


def serve_pool(pool: str) -> Any:
    """What ``--pool`` names: a pool name or YAML path as it is, or for ``replay:DATA`` a replay
    pool over recorded outcomes (``replay:routerbench``, ``replay:routerbench:test``, or a
    table's path; see :func:`orchestra.eval.data.load_eval_data`), whose models answer with
    what they were recorded answering (a request's last message is a query's id or text).
    Built in each process that serves it (a Ray replica registers its own replay table)."""
    if not pool.startswith(REPLAY):
        return pool
    from orchestra.backends.replay import pool_from_outcomes
    from orchestra.eval.data import load_eval_data

    data = load_eval_data(pool[len(REPLAY):] or "routerbench", priors="auto")
    return pool_from_outcomes(data.table, quality=data.priors)


def serve_command(
    pool: Annotated[str, typer.Option(
        "--pool", help="Pool name or YAML path, or replay:DATA (recorded outcomes, e.g. "
                       "replay:routerbench).")] = "local",
    policy: Annotated[str | None, typer.Option(
        "--policy", help="The policy model 'auto' routes with (default: the pool's).")] = None,
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on; any but loopback needs --keys.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0 picks a free one).")] = 8000,
    keys: Annotated[str | None, typer.Option(
        "--keys", help="API key store (a SQLite file, or a postgresql:// URL): requests need a "
                       "key, each key has budgets.",
    )] = None,
    store: Annotated[str | None, typer.Option(
        "--store", help="Trace store file or postgresql:// URL (default: $ORCHESTRA_TRACE_DB or "
                        "the user data dir).",
    )] = None,
    timeout: Annotated[float, typer.Option(
        "--timeout", help="The most seconds a request may take.")] = 300.0,
    ray: Annotated[bool, typer.Option(
        "--ray", help="Run on Ray Serve (replicas share the key and trace stores: SQLite files "
                      "on one machine, postgresql:// URLs across machines).",
    )] = False,
    replicas: Annotated[int, typer.Option(
        "--replicas", help="With --ray: how many replicas serve requests.")] = 2,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="With --ray: a Ray cluster to join (default: a private local "
                              "Ray).")] = None,
) -> None:
    """Serve the pool as an OpenAI-compatible endpoint (chat completions, models, metrics)."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be between 0 and 65535 (got {port!r})")
    check_bind(host, keys)
    if ray:
        _serve_on_ray(pool, policy, host, port, keys, store, timeout, replicas, ray_address)
        return
    try:
        import uvicorn
    except ImportError as e:
        raise UserError("orchestra serve needs uvicorn and starlette: "
                        "pip install 'orchestra[serve]'") from e
    from orchestra.serve.app import create_app

    app = create_app(serve_pool(pool), policy=policy, keys=keys, store=store, timeout_s=timeout)
    srv = app.state.server
    config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False,
                            # In-flight runs get their full time to finish on Ctrl+C; after
                            # that they are cancelled and their traces say interrupted.
                            timeout_graceful_shutdown=int(timeout) + 1)
    sys.stdout.write(f"orchestra serve: pool {srv.pool.name!r}, policy "
                     f"{getattr(srv.policy, 'name', srv.policy)!r}, keys "
                     f"{'on' if srv.keys is not None else 'off'}; OpenAI base URL "
                     f"http://{host}:{port}/v1 (uvicorn says where it listens; Ctrl+C to stop)\n")
    sys.stdout.flush()
    uvicorn.Server(config).run()


def _serve_on_ray(pool: str, policy: str | None, host: str, port: int, keys: str | None,
                  store: str | None, timeout: float, replicas: int,
                  address: str | None) -> None:
    from orchestra.serve.app import Server
    from orchestra.serve.ray_serve import run_on_ray

    # Checked here, once, so that a bad pool, policy or key file is one line now rather than
    # a replica failing to start.
    Server(serve_pool(pool), policy=policy, keys=keys, store=store, timeout_s=timeout).close()
    keys_path = None if keys is None else (
        keys if "://" in keys else str(Path(keys).expanduser().resolve()))
    store_path = None if store is None else (
        store if "://" in store else str(Path(store).expanduser().resolve()))

    def build() -> object:
        from orchestra.serve.app import create_app

        return create_app(serve_pool(pool), policy=policy, keys=keys_path, store=store_path,
                          timeout_s=timeout)

    sys.stdout.write(f"orchestra serve: {replicas} Ray Serve replica(s) of pool {pool!r}; "
                     f"OpenAI base URL http://{host}:{port}/v1 (Ctrl+C to stop)\n")
    sys.stdout.flush()
    run_on_ray(build, host=host, port=port, replicas=replicas, address=address)
