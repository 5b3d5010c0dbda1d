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
        "first third",
        "last third",
        "rise (90% interval)",
        "share of reward",
        "change corr.",
    ):
        table.add_column(column, justify="left" if column == "component" else "right")
    for c in report.components:
        label = (
            f"{c.name} (primary)"
            if c.name == report.primary
            else c.name
            if c.weight > 0
            else f"{c.name} (measured)"
            if c.weight == 0
            else f"{c.name} (penalty)"
        )
        style = "bold red" if c.flags else ""
        interval = c.interval
        table.add_row(
            Text(label, style=style),
            f"{c.weight:g}",
            _num(c.start),
            _num(c.end),
            f"{c.rise:+.3f}" + (f" [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else ""),
            _num(c.share, "{:.0%}"),
            _num(c.correlation, "{:+.2f}"),
        )
    parts: list = [table]
    parts += [Text(note, style="yellow") for note in report.notes]
    if report.flags:
        parts += [Text(f"⚠ {flag}", style="red") for flag in report.flags]
    else:
        parts.append(
            Text(
                "no flags: no auxiliary reward outgrew correctness and no measurement rose without it, "
                "beyond step-to-step noise",
                style="green",
            )
        )
    parts.append(
        Text(
            "rise: last third minus first third of the logged steps; interval from step-to-step noise. "
            "change corr.: correlation of step-to-step changes with the primary's.",
            style="dim",
        )
    )
    return Group(*parts)
