"""Rich renderables for ``rewardlab runs list`` and ``rewardlab runs show``.

Only renderables live here, no printing, so the CLI decides where they go and tests can render them
into a string. Every user-provided value is wrapped in ``Text`` so a config string like ``[bold]`` is
shown literally instead of being read as rich markup.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from rewardlab.runs.store import Run

if TYPE_CHECKING:
    from rewardlab.runs.store import RunStore

# The summary number shown in the list, first one present wins.
KEY_SUMMARY = ("mean_reward", "final_reward", "accuracy", "pass@1", "reward", "final_loss", "loss")
STATUS_STYLES = {
    "running": "yellow",
    "completed": "green",
    "failed": "red",
    "interrupted": "magenta",
    "stopped": "blue",
}
# Summary lists shown as tables of their own (train runs' health alerts and stops), with these columns.
SUMMARY_TABLES = {"alerts": ("step", "name", "action", "message"), "stops": ("step", "cause", "reason")}
MANIFEST_PACKAGES = ("rewardlab", "torch", "transformers", "peft", "accelerate", "datasets")


def format_duration(seconds: float | None) -> str:
    """Compact human duration: 45s, 3m12s, 2h05m, 1d03h; '-' when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def format_value(value: Any) -> str:
    """Numbers to 4 significant digits (metrics are noisy; more digits are noise), the rest as str."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def key_summary(summary: Mapping[str, Any]) -> str:
    """The headline number of a run, e.g. ``mean_reward=0.532``; '' when none is known."""
    for key in KEY_SUMMARY:
        if isinstance(summary.get(key), (int, float)):
            return f"{key}={format_value(summary[key])}"
    return ""


def _duration_cell(run: Run) -> Text:
    """Finished runs show their duration; running ones show elapsed time, dimmed (it may be stale)."""
    if run.finished_at is not None:
        return Text(format_duration(run.duration_s))
    return Text(format_duration(time.time() - run.created_at), style="dim")


def runs_table(runs: list[Run]) -> Table:
    """One row per run, newest first as given: id, kind, status, created, duration, headline number."""
    table = Table(title=f"{len(runs)} run{'s' if len(runs) != 1 else ''}", title_justify="left")
    table.add_column("id", style="bold cyan", no_wrap=True)
    table.add_column("kind")
    table.add_column("name")
    table.add_column("status")
    table.add_column("created", no_wrap=True)
    table.add_column("duration", justify="right")
    table.add_column("result")
    for run in runs:
        table.add_row(
            Text(run.id),
            Text(run.kind),
            Text(run.name or ""),
            status_text(run.status),
            Text(run.created.strftime("%Y-%m-%d %H:%M")),
            _duration_cell(run),
            Text(key_summary(run.summary)),
        )
    return table


def _add_tree(node: Tree, value: Any) -> None:
    """Nested dicts become branches; short scalar lists stay on one line to keep configs compact."""
    if isinstance(value, Mapping):
        for key, child in value.items():
            if (isinstance(child, Mapping) and child) or _is_long_list(child):
                _add_tree(node.add(Text(str(key), style="bold")), child)
            else:
                node.add(Text.assemble((f"{key}: ", "bold"), format_value(child)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            if isinstance(child, (Mapping, list)):
                _add_tree(node.add(Text(f"[{index}]", style="bold")), child)
            else:
                node.add(Text(format_value(child)))


def _is_long_list(value: Any) -> bool:
    return isinstance(value, list) and (
        len(value) > 8 or any(isinstance(item, (Mapping, list)) for item in value)
    )


def config_tree(config: Mapping[str, Any], label: str = "config") -> Tree:
    tree = Tree(Text(label, style="bold magenta"))
    _add_tree(tree, config)
    if not config:
        tree.add(Text("(empty)", style="dim"))
    return tree


def _kv_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(Text(key), Text(format_value(value)))
    return table


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested summaries as dotted keys, so they fit a two-column table."""
    rows: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows.extend(_flatten(value, f"{name}."))
        else:
            rows.append((name, value))
    return rows


def _git_text(git: Mapping[str, Any]) -> str:
    """``abc123def456 (dirty)``, ``no commit`` in a fresh repository, or ``not a repository``."""
    commit, dirty = git.get("commit"), git.get("dirty")
    if commit is None and dirty is None:
        return "not a repository"
    return f"{(commit or 'no commit')[:12]}{' (dirty)' if dirty else ''}"


def manifest_table(manifest: Mapping[str, Any]) -> Table:
    """The short provenance: versions, git commit, seed, python, host and command."""
    packages = manifest.get("packages") or {}
    git = manifest.get("git") or {}
    git_text = _git_text(git)
    rows: list[tuple[str, Any]] = [(name, packages[name]) for name in MANIFEST_PACKAGES if name in packages]
    rows += [
        ("git", git_text),
        ("seed", manifest.get("seed")),
        ("python", manifest.get("python")),
        ("host", manifest.get("hostname")),
        ("command", " ".join(manifest.get("command") or [])),
    ]
    return _kv_table("manifest", rows)


def metrics_table(series: Mapping[str, list[tuple[int, float]]]) -> Table:
    """The last value of each metric, with how many steps were logged."""
    table = Table(title="metrics (last value)", title_justify="left")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("step", justify="right")
    table.add_column("value", justify="right")
    table.add_column("points", justify="right")
    for name, points in series.items():
        step, value = points[-1]
        table.add_row(Text(name), str(step), format_value(value), str(len(points)))
    return table


def records_table(title: str, records: list[Mapping[str, Any]], columns: tuple[str, ...]) -> Table:
    """A list of records (a run's alerts, its stops) as a table, one row each."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, style="bold" if column == columns[1] else "", overflow="fold")
    for record in records:
        table.add_row(*(Text(format_value(record.get(column))) for column in columns))
    return table


def _header(run: Run) -> Text:
    text = Text.assemble((run.id, "bold cyan"), "  ", (run.kind, "bold"), "  ")
    text.append_text(status_text(run.status))
    text.append(f"\ncreated {run.created:%Y-%m-%d %H:%M:%S}  duration {_duration_cell(run).plain}")
    if run.name:
        text.append(f"  name {run.name}")
    if run.parent:
        text.append(f"  parent {run.parent}")
    text.append(f"\ndir {run.dir}")
    return text


def run_details(store: RunStore, run: Run) -> Group:
    """Everything about one run: header, config tree, manifest, summary, last metrics, rollout counts."""
    parts: list[Any] = [
        _header(run),
        Text(""),
        config_tree(run.config),
        Text(""),
        manifest_table(run.manifest),
    ]
    if run.summary:
        plain = {key: value for key, value in run.summary.items() if key not in SUMMARY_TABLES}
        parts += [Text(""), _kv_table("summary", _flatten(plain))]
        for key, columns in SUMMARY_TABLES.items():
            if run.summary.get(key):
                parts += [Text(""), records_table(key, run.summary[key], columns)]
    series = store.metrics(run.id)
    if series:
        parts += [Text(""), metrics_table(series)]
    counts = store.rollout_counts(run.id)
    if counts:
        parts += [Text(""), _kv_table("rollouts", [(phase, n) for phase, n in counts.items()])]
    return Group(*parts)


def _message_lines(messages: list[Mapping[str, Any]]) -> Text:
    text = Text()
    for index, message in enumerate(messages):
        text.append(("\n" if index else "") + f"{message.get('role', '?')}: ", style="bold")
        text.append(str(message.get("content", "")))
    return text


def rollouts_view(rows: list[Mapping[str, Any]], title: str) -> Group:
    """Stored rollouts as a person reads them: the prompt's last message, every message after it, the
    reward with its components, and what errored."""
    parts: list[Any] = [Text(title, style="bold magenta")]
    for row in rows:
        head = Text.assemble(
            (f"{row['phase']} step {row['step']}", "bold"),
            f"  example {row['example_id']} #{row['sample_index']}  reward ",
            (format_value(row["reward"]), "bold"),
        )
        components = ", ".join(f"{k} {format_value(v)}" for k, v in (row.get("components") or {}).items())
        if components:
            head.append(f"  ({components})")
        if row.get("truncated"):
            head.append("  truncated", style="yellow")
        parts.append(head)
        prompt = row.get("prompt") or []
        parts.append(_message_lines(prompt[-1:]))
        parts.append(_message_lines(row.get("completion") or []))
        if row.get("answer"):
            parts.append(Text.assemble(("reference: ", "dim"), str(row["answer"])))
        for name, message in {
            **(row.get("errors") or {}),
            **({"rollout": row["error"]} if row.get("error") else {}),
        }.items():
            parts.append(Text(f"error ({name}): {message}", style="red"))
        parts.append(Text(""))
    if not rows:
        parts.append(Text("(no rollouts stored)", style="dim"))
    return Group(*parts)
