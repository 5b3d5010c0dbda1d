"""Rich renderings of evaluation summaries and comparisons for the terminal."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from rewardlab.eval.compare import Comparison, debug_line


def eval_summary_table(summary: dict, title: str = "evaluation") -> Table:
    table = Table(title=title, show_header=True)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    table.add_row("examples x rollouts", f"{summary['num_examples']} x {summary['rollouts_per_example']}")
    table.add_row("mean reward", f"{summary['mean_reward']:.3f} ± {summary['std_reward']:.3f}")
    if summary.get("mean_reward_without_errors") is not None:  # errored rollouts count as 0 above
        table.add_row(
            Text("  without errored rollouts", style="yellow"),
            Text(f"{summary['mean_reward_without_errors']:.3f}", style="yellow"),
        )
    for name, stats in summary["components"].items():
        errors = f"  ({stats['errors']} errors)" if stats["errors"] else ""
        primary = " (primary)" if name == summary.get("primary") else ""
        table.add_row(f"  {name}{primary}", f"{stats['mean']:.3f} ± {stats['std']:.3f}{errors}")
    for key, value in summary.items():
        if key.startswith("pass@"):
            table.add_row(key, f"{value:.3f}")
    # Next to the rewards: how fast they came, and how much retrying it took to get them.
    table.add_row(
        f"latency per {summary.get('latency_per', 'rollout')} mean / p50 / p95",
        " / ".join(f"{summary[key]:.3f}s" for key in ("latency_mean_s", "latency_p50_s", "latency_p95_s")),
    )
    if "batches" in summary:  # rollouts generated together have a batch's latency, and a rate
        table.add_row(
            "batches x rollouts, rollouts/s",
            f"{summary['batches']} x {summary['rollouts_per_batch']:.0f}, "
            f"{summary['rollouts_per_second']:.1f}",
        )
    if "requests" in summary:
        style = "yellow" if summary["requests_retried"] or summary["requests_failed"] else ""
        table.add_row(
            Text("requests / retried / failed", style=style),
            Text(_requests(summary), style=style),
        )
    style = "red" if summary["errors"] else ""
    table.add_row(Text("errored rollouts", style=style), Text(str(summary["errors"]), style=style))
    # The messages, not only the count: the first few say what broke.
    for sample in summary.get("error_samples", [])[:3]:
        table.add_row(Text("  error", style=style), Text(sample, style=style, overflow="fold"))
    # An endpoint returns text, not token ids: a count of zero would be a false number.
    tokens = "n/a (text only)" if "endpoint" in summary else f"{summary['mean_completion_tokens']:.1f}"
    table.add_row("completion tokens (mean)", tokens)
    table.add_row("truncated", f"{summary['truncated_fraction']:.1%}")
    table.add_row("wall time", f"{summary['wall_seconds']:.1f}s")
    return table


def _requests(summary: dict) -> str:
    return (
        f"{summary['requests']} / {summary['requests_retried']} ({summary['retries']} retries) / "
        f"{summary['requests_failed']}"
    )


def _ci(value: tuple[float, float]) -> str:
    return f"[{value[0]:+.3f}, {value[1]:+.3f}]"


def relative_text(comparison: Comparison) -> str:
    """``correct_answer +26.5% [+18.0%, +35.1%]``, or why there is no relative gain."""
    gain = comparison.relative
    if gain is None:
        return "n/a (no primary component recorded)"
    if gain.value is None:
        return f"{gain.component}: {gain.reason}"
    interval = f" [{gain.ci95[0]:+.1%}, {gain.ci95[1]:+.1%}]" if gain.ci95 else f" ({gain.reason})"
    return f"{gain.component} {gain.value:+.1%}{interval}"


def comparison_notes(comparison: Comparison) -> list[Text]:
    """The relative gain, what the interval is, and every warning about the pairing."""
    notes = [
        Text(f"relative gain on the primary component: {relative_text(comparison)}"),
        Text(f"n = {comparison.reward.n} paired examples; 95% CI: {comparison.reward.method}", style="dim"),
    ]
    notes.extend(Text(f"warning: {warning}", style="yellow") for warning in comparison.warnings)
    for label, overlap in (("A", comparison.overlap_a), ("B", comparison.overlap_b)):
        if overlap is not None and not (overlap.checked and (overlap.exact or overlap.near)):
            notes.append(Text(f"training overlap, {overlap.describe(label)}", style="dim"))
    return notes


def comparison_view(comparison: Comparison) -> Group:
    table = Table(title=f"{comparison.run_b} vs {comparison.run_a} (B − A, paired by example)")
    for column in ("metric", "A", "B", "B − A", "95% CI", "win / tie / loss", "sign test p"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    rows = [("reward", comparison.reward)] + [(f"  {k}", v) for k, v in comparison.components.items()]
    for name, paired in rows:
        significant = paired.ci95[0] > 0 or paired.ci95[1] < 0
        table.add_row(
            name,
            f"{paired.mean_a:.3f}",
            f"{paired.mean_b:.3f}",
            Text(
                f"{paired.mean_diff:+.3f}",
                style="bold green"
                if significant and paired.mean_diff > 0
                else "bold red"
                if significant
                else "",
            ),
            _ci(paired.ci95),
            f"{paired.wins} / {paired.ties} / {paired.losses}",
            f"{paired.p_value_sign:.3g}",
        )
    samples = Table(title="debug samples (largest differences first)", show_lines=True)
    for column in ("question", "reference", "A output", "B output"):
        samples.add_column(column, overflow="fold")
    for s in comparison.samples:
        samples.add_row(
            s.question,
            s.answer,
            f"{s.output_a}\n[dim]reward {s.reward_a:.2f}[/]",
            f"{s.output_b}\n[dim]reward {s.reward_b:.2f}[/]",
        )
    return Group(table, *comparison_notes(comparison), samples)


def _latency(summary: dict, unit: bool = False) -> str:
    numbers = " / ".join(
        f"{summary[k] * 1000:.0f}" for k in ("latency_mean_s", "latency_p50_s", "latency_p95_s")
    )
    return f"{numbers} per {summary.get('latency_per', 'rollout')}" if unit else numbers


def _latency_row(summary_a: dict, summary_b: dict) -> tuple[str, str, str]:
    """(label, A, B): the unit goes in the label when both sides share it, else next to each number,
    since a local model's per-rollout batch time and an endpoint's per-request time are not alike."""
    per_a, per_b = summary_a.get("latency_per", "rollout"), summary_b.get("latency_per", "rollout")
    if per_a == per_b:
        return f"latency ms per {per_a} (mean / p50 / p95)", _latency(summary_a), _latency(summary_b)
    return "latency ms (mean / p50 / p95)", _latency(summary_a, unit=True), _latency(summary_b, unit=True)


def _untraced_note(results, label_a: str, label_b: str) -> Text | None:
    """Said once: an endpoint's training data cannot be traced, so "no overlap" would be a guess."""
    if not results:
        return None
    sides = ((label_a, results[0].traced_a), (label_b, results[0].traced_b))
    untraced = [label for label, traced in sides if not traced]
    if not untraced:
        return None
    one = len(untraced) == 1
    return Text(
        f"note: {' and '.join(untraced)} {'is an endpoint' if one else 'are endpoints'} without run "
        f"lineage: overlap of the records with {'its' if one else 'their'} training data is unchecked",
        style="yellow",
    )


def model_comparison_view(results, label_a: str, label_b: str) -> Group:
    """Every data mode: paired metrics, latency per model, training-overlap warnings, debug samples."""
    parts: list = []
    note = _untraced_note(results, label_a, label_b)
    if note is not None:
        parts.append(note)
    for result in results:
        if result.skipped:
            parts.append(Text(f"{result.mode}: skipped — {result.skipped}", style="yellow"))
            continue
        comparison = result.comparison
        table = Table(title=f"{result.mode}: {label_b} vs {label_a} on the same {result.examples} records")
        for column in ("metric", label_a, label_b, f"{label_b} − {label_a}", "95% CI", "win / tie / loss"):
            table.add_column(column, justify="left" if column == "metric" else "right")
        rows = [("reward", comparison.reward)] + [(f"  {k}", v) for k, v in comparison.components.items()]
        for name, paired in rows:
            significant = paired.ci95[0] > 0 or paired.ci95[1] < 0
            style = ("bold green" if paired.mean_diff > 0 else "bold red") if significant else ""
            table.add_row(
                name,
                f"{paired.mean_a:.3f}",
                f"{paired.mean_b:.3f}",
                Text(f"{paired.mean_diff:+.3f}", style=style),
                _ci(paired.ci95),
                f"{paired.wins} / {paired.ties} / {paired.losses}",
            )
        for key in [k for k in result.summary_a if k.startswith("pass@")]:
            table.add_row(
                key,
                f"{result.summary_a[key]:.3f}",
                f"{result.summary_b.get(key, float('nan')):.3f}",
                "",
                "",
                "",
            )
        table.add_row(*_latency_row(result.summary_a, result.summary_b), "", "", "")
        if "requests" in result.summary_a or "requests" in result.summary_b:
            table.add_row(
                "requests / retried / failed",
                _requests(result.summary_a) if "requests" in result.summary_a else "",
                _requests(result.summary_b) if "requests" in result.summary_b else "",
                "",
                "",
                "",
            )
        parts.append(table)
        parts.extend(comparison_notes(comparison))
        for label, overlap, traced in (
            (label_a, result.overlap_a, result.traced_a),
            (label_b, result.overlap_b, result.traced_b),
        ):
            if overlap is not None and overlap.checked and (overlap.exact or overlap.near):
                parts.append(
                    Text(
                        f"warning: {overlap.describe(label)} — this mode measures memory, not generalisation",
                        style="bold yellow",
                    )
                )
            elif overlap is not None and traced:  # endpoints are noted once, above
                parts.append(Text(f"training overlap, {overlap.describe(label)}", style="dim"))
        for question, gold, view_a, view_b in result.views:
            parts.append(Text(debug_line(question, gold, label_a, view_a, label_b, view_b), style="dim"))
    return Group(*parts)


def compare_view(result, label_a: str, label_b: str) -> Group:
    """What ``rewardlab compare`` prints: two eval runs side by side, or two models in every data mode, then
    the verdict."""
    if result.runs is not None:
        body = comparison_view(result.runs)
    else:
        body = model_comparison_view(result.modes, label_a, label_b)
    return Group(body, *verdict_view(result.verdict, label_b)) if result.verdict else body


VERDICT_STYLES = {"pass": "bold green", "fail": "bold red", "none": "bold yellow"}


def verdict_view(verdict, label_b: str) -> list[Text]:
    """The verdict's headline in its colour, each mode against the bar, the cost line."""
    from rewardlab.eval.verdict import render

    headline, *rest = render(verdict, label_b)
    return [Text(headline, style=VERDICT_STYLES[verdict.outcome]), *(Text(line) for line in rest)]
