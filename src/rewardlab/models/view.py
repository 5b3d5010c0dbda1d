"""The ``rewardlab models list`` table."""

from __future__ import annotations

from rich.table import Table

from rewardlab.models.catalog import ModelRow


def _count(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1e9:.2f}B" if value >= 1e9 else f"{value / 1e6:.1f}M"


def _bytes(value: int | None) -> str:
    if value is None:
        return "not fetched"
    return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"


def models_table(rows: list[ModelRow]) -> Table:
    table = Table(title="models")
    for column in ("name", "kind", "parameters", "on disk", "license", "source"):
        table.add_column(column, style="bold" if column == "name" else None)
    for row in rows:
        size = _bytes(row.size_bytes) if row.cached or row.kind != "built locally" else "built on first use"
        table.add_row(row.name, row.kind, _count(row.parameters), size, row.license, row.source)
    return table
