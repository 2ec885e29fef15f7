"""``orchestra serve --ray``: the same ASGI app as a Ray Serve deployment with several replicas.

Each replica builds its own app (:func:`orchestra.serve.app.create_app`) when it starts, from a
builder function Ray ships to it: nothing with an open SQLite connection is pickled. Replicas
on one machine share the key store and the trace store, which are SQLite files safe across
processes (a key's holds are taken in one ``BEGIN IMMEDIATE`` transaction, so the per-key
budgets hold across replicas too); replicas on several machines share them as ``postgresql://``
URLs (``--keys`` and ``--store``), where a hold locks the key's row instead. Ray's HTTP proxy listens on ``host:port`` and spreads
requests over the replicas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestra.errors import UserError

__all__ = ["run_on_ray"]


def run_on_ray(build: Callable[[], Any], *, host: str, port: int, replicas: int,
               address: str | None = None, blocking: bool = True,
               num_cpus_per_replica: float = 0.5) -> None:
    """Deploy the app that ``build()`` returns on Ray Serve, ``replicas`` times.

    Args:
        build: returns the ASGI app; called on each replica.
        host, port: where Ray's HTTP proxy listens.
        replicas: how many copies of the app serve requests.
        address: a Ray cluster to join; default a private local Ray on loopback.
        blocking: wait until Ctrl+C (then shut Serve and the local Ray down); ``False``
            returns once the deployment is ready.
        num_cpus_per_replica: CPUs Ray reserves for each replica (a replica mostly waits on
            model calls).
    """
    if not isinstance(replicas, int) or replicas < 1:
        raise UserError(f"--replicas must be a whole number >= 1 (got {replicas!r})")
    try:
        import ray
        from ray import serve
    except ImportError as e:
        raise UserError("orchestra serve --ray needs Ray Serve: pip install 'orchestra[serve]'"
                        ) from e
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # A private local Ray bound to loopback: nothing leaves the machine.
            ray.init(address="local", include_dashboard=False, log_to_driver=False,
                     _node_ip_address="127.0.0.1")
    serve.start(http_options={"host": host, "port": port})
    deployment: Any = serve.deployment(
        serve.ingress(build)(), name="orchestra", num_replicas=replicas,
        ray_actor_options={"num_cpus": num_cpus_per_replica})
    try:
        serve.run(deployment.bind(), name="orchestra", route_prefix="/", blocking=blocking)
    except BaseException:
        _stop(started)
        raise
    if blocking:
        _stop(started)


def _stop(started: bool) -> None:
    import ray
    from ray import serve

    serve.shutdown()
    if started:
        ray.shutdown()
