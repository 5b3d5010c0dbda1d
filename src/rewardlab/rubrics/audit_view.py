"""Terminal rendering of a reward-hacking audit."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from rewardlab.rubrics.audit import AuditReport


def _num(value: float | None, fmt: str = "{:.3f}") -> str:
    return "–" if value is None else fmt.format(value)


def audit_view(report: AuditReport) -> Group:
    table = Table(title=f"reward audit of {report.run_id} ({report.steps} steps)")
    for column in (
        "component",
        "weight",
        "first fifth",
        "last fifth",
        "rise",
        "share of reward",
        "corr. with primary",
    ):
        table.add_column(column, justify="left" if column == "component" else "right")
    for c in report.components:
        label = (
            f"{c.name} (primary)"
            if c.name == report.primary
            else c.name
            if c.weight
            else f"{c.name} (measured)"
        )
        style = "bold red" if c.flags else ""
        table.add_row(
            Text(label, style=style),
            f"{c.weight:g}",
            _num(c.start),
            _num(c.end),
            f"{c.rise:+.3f}",
            _num(c.share, "{:.0%}"),
            _num(c.correlation, "{:+.2f}"),
        )
    parts: list = [table]
    if report.flags:
        parts += [Text(f"⚠ {flag}", style="red") for flag in report.flags]
    else:
        parts.append(Text("no flags: the auxiliary rewards did not outgrow correctness", style="green"))
    return Group(*parts)
