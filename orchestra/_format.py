"""Small text formats shared by the commands' tables (no imports beyond the standard library)."""

from __future__ import annotations

__all__ = ["usd"]


def usd(x: float | None) -> str:
    """A USD amount for a table cell: ``—`` for none, ``$0``, 4 decimals from a cent up,
    3 significant digits below (local models cost fractions of a micro-dollar)."""
    if x is None:
        return "—"
    if x == 0:
        return "$0"
    return f"${x:.4f}" if abs(x) >= 0.01 else f"${x:.3g}"
