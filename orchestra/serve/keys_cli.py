"""``orchestra keys``: create, list and revoke the API keys of ``orchestra serve`` and show what
each has spent (the store: :class:`orchestra.serve.keys.KeyStore`).

::

    orchestra keys create alice --per-day-usd 5 --total-usd 50
    orchestra keys list
    orchestra keys usage alice
    orchestra keys revoke alice

Every command takes ``--keys PATH`` (default ``<data home>/keys.sqlite``, the server's default;
a ``postgresql://`` URL names a PostgreSQL key store).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestra.serve.keys import KeyInfo, KeyStore, money

__all__ = ["keys_app"]

keys_app = typer.Typer(
    name="keys",
    help="Create, list and revoke API keys for `orchestra serve`, with their budgets and spend.",
    no_args_is_help=True,
    add_completion=False,
)

KeysOpt = Annotated[str | None, typer.Option(
    "--keys", help="The key store: an SQLite file (default: <data home>/keys.sqlite, as "
    "`orchestra serve`) or a postgresql:// URL.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

_out = Console(markup=False, emoji=False)
_err = Console(stderr=True, markup=False, emoji=False)


@keys_app.callback()
def _keys() -> None:
    """Create, list and revoke API keys for `orchestra serve`, with their budgets and spend."""


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def _info_dict(k: KeyInfo) -> dict[str, Any]:
    return {"id": k.id, "name": k.name, "prefix": k.prefix, "created_at": k.created_at,
            "revoked_at": k.revoked_at, "per_request_usd": k.per_request_usd,
            "per_day_usd": k.per_day_usd, "total_usd": k.total_usd}


def _spent_of(w: dict[str, Any]) -> Text:
    """``spent / limit`` of a window, red when the window went past its limit (an overrun)."""
    text = f"{money(w['spent'])} / {money(w['limit'])}" if w["limit"] is not None else \
        money(w["spent"])
    return Text(text, style="red" if w["exceeded"] else "")


@keys_app.command("create")
def create_command(
    name: Annotated[str, typer.Argument(help="A name for the key (letters, digits, ._@-).")],
    per_request_usd: Annotated[float | None, typer.Option(
        "--per-request-usd", min=0.0, help="The most one request may spend.")] = None,
    per_day_usd: Annotated[float | None, typer.Option(
        "--per-day-usd", min=0.0, help="The most the key may spend in one UTC day.")] = None,
    total_usd: Annotated[float | None, typer.Option(
        "--total-usd", min=0.0, help="The most the key may ever spend.")] = None,
    keys: KeysOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key and print it (shown this once: only its hash is stored)."""
    store = KeyStore(keys)
    raw, info = store.create(name, per_request_usd=per_request_usd, per_day_usd=per_day_usd,
                             total_usd=total_usd)
    if as_json:
        typer.echo(json.dumps({"key": raw, **_info_dict(info)}))
        return
    _out.print(raw)
    limits = ", ".join(f"{w.replace('_', '-')} {money(v)}" for w, v in info.limits().items())
    _err.print(f"created key {info.name!r} ({info.id}; {limits}) in {store.where}. Copy the key "
               "now: it is shown only this once.", highlight=False, soft_wrap=True)


@keys_app.command("list")
def list_command(keys: KeysOpt = None, as_json: JsonOpt = False) -> None:
    """List the keys with their limits, what they spent today (UTC) and in all, and overruns."""
    store = KeyStore(keys)
    rows = [(k, store.usage(k)) for k in store.list()]
    if as_json:
        typer.echo(json.dumps([{**_info_dict(k), "usage": u} for k, u in rows]))
        return
    if not rows:
        _out.print(f"no keys in {store.where}; create one with `orchestra keys create NAME`")
        return
    table = Table(title=f"API keys in {store.where}")
    for col in ("name", "prefix", "created", "status", "per request", "today (UTC)", "total",
                "in flight", "overruns"):
        table.add_column(col)
    for k, u in rows:
        overruns = u["total"]["overruns"]
        table.add_row(
            k.name, k.prefix + "…", _when(k.created_at),
            Text("revoked", style="red") if k.revoked else Text("active", style="green"),
            money(k.per_request_usd), _spent_of(u["per_day"]), _spent_of(u["total"]),
            f"{u['live_holds']} ({money(u['total']['held'])})",
            Text(f"{overruns} (+{money(u['total']['overrun_usd'])})", style="red")
            if overruns else "0")
    _out.print(table)


@keys_app.command("revoke")
def revoke_command(
    key: Annotated[str, typer.Argument(help="The key's name or id.")],
    keys: KeysOpt = None,
) -> None:
    """Revoke a key: it is refused from now on; requests in flight still settle their spend."""
    info = KeyStore(keys).revoke(key)
    _out.print(f"revoked {info.name!r} ({info.prefix}…)")


@keys_app.command("usage")
def usage_command(
    key: Annotated[str, typer.Argument(help="The key's name or id.")],
    keys: KeysOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a key's budget windows: limit, spent, held by requests in flight, left, overruns."""
    u = KeyStore(keys).usage(key)
    if as_json:
        typer.echo(json.dumps(u))
        return
    status = " (revoked)" if u["revoked"] else ""
    table = Table(title=f"key {u['key']!r} ({u['prefix']}…){status}")
    for col in ("window", "limit", "spent", "held", "left", "overruns"):
        table.add_column(col)
    labels = {"per_request": "per request (largest)", "per_day": f"today ({u['day']} UTC)",
              "total": "total"}
    for w, label in labels.items():
        x = u[w]
        table.add_row(
            label, money(x["limit"]), _spent_of({**x, "limit": None}), money(x["held"]),
            money(x["left"]) if x["limit"] is not None else "",
            Text(f"{x['overruns']} (+{money(x['overrun_usd'])})", style="red")
            if x["overruns"] else "0")
    _out.print(table)
    if u["expired"]["count"]:
        _out.print(Text(f"{u['expired']['count']} expired holds charged "
                        f"{money(u['expired']['charged_usd'])}: {u['expired']['note']}",
                        style="yellow"))


if __name__ == "__main__":  # pragma: no cover
    keys_app()
