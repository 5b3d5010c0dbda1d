"""How ``rewardlab probe prefill`` shows what it found: rich tables, one PNG (the mean reward per condition
with its interval; the answer distribution per condition) and the numbers as JSON."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from rich.text import Text

from rewardlab.console import console, print_whole
from rewardlab.probes.prefill import NO_ANSWER, Condition, PrefillProbe
from rewardlab.probes.view import _cut, _plain, _pyplot, write_numbers_and_plot

ANSWER_CHARS = 24  # an answer in a table cell or a legend
COMPLETION_CHARS = 100
ANSWERS_PLOTTED = 6  # the answers commonest in any condition get their own colour; the rest are "other"


def _interval(low: float, high: float) -> str:
    return f"[{low:.3f}, {high:.3f}]"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _flat(text: str, limit: int) -> str:
    return _cut(text.replace("\n", "\\n"), limit)


# -- console -------------------------------------------------------------------------------------------


def render_prefill(result: PrefillProbe) -> None:
    """For each model: the summary table, each condition's top answers, warnings, and the first example in
    every condition; with a second model, the two side by side per condition."""
    for probe in result.models:
        print_whole(_summary_table(probe))
        print_whole(_answers_table(probe))
        for warning in probe.warnings:
            console.print(Text(f"note: {warning}", style="dim"), soft_wrap=True)
        if probe.baseline.samples:
            print_whole(_samples_table(probe))
    if result.compare is not None:
        print_whole(_between_table(result))


def _between_table(result: PrefillProbe) -> Table:
    first, second = result, result.compare
    table = Table(title=Text(f"{second.model} against {first.model}, condition by condition (paired over "
                             "examples)"), title_justify="left")  # fmt: skip
    table.add_column("condition", style="bold")
    for name in (first.model, second.model):
        table.add_column(Text(f"{name} reward"), justify="right")
        table.add_column(Text(f"{name} Δ vs no prefix"), justify="right")
    table.add_column(Text("difference [95% CI]"), justify="right")
    table.add_column("win/tie/loss", justify="right")
    for a, b, between in zip(first.conditions, second.conditions, result.between, strict=True):
        cells = []
        for c in (a, b):
            delta = "–" if c.difference is None else f"{c.difference['mean_diff']:+.3f}"
            cells += [f"{c.mean_reward:.3f}", delta]
        table.add_row(
            Text(a.label), *cells, f"{between['mean_diff']:+.3f} {_interval(*between['ci95'])}",
            f"{between['wins']}/{between['ties']}/{between['losses']}",
        )  # fmt: skip
    return table


def _summary_table(result: PrefillProbe) -> Table:
    title = (
        f"prefill: {result.model} on {result.env} ({result.split} split), {result.num_examples} examples x "
        f"{result.rollouts} rollouts, temperature {result.temperature:g}, up to {result.max_new_tokens} new "
        "tokens after the prefix"
    )
    table = Table(title=Text(title), title_justify="left")
    names = list(result.baseline.components)
    table.add_column("condition", style="bold")
    table.add_column("reward [95% CI]", justify="right")
    for name in names:
        table.add_column(Text(name), justify="right")
    for name in ("Δ reward [95% CI]", "win/tie/loss", "answered", "answers changed", "tokens"):
        table.add_column(name, justify="right")
    for c in result.conditions:
        diff = c.difference
        delta = "–" if diff is None else f"{diff['mean_diff']:+.3f} {_interval(*diff['ci95'])}"
        record = "–" if diff is None else f"{diff['wins']}/{diff['ties']}/{diff['losses']}"
        changed = _share(c.changed) + (" (noise)" if diff is None and c.changed is not None else "")
        table.add_row(
            Text(c.label), f"{c.mean_reward:.3f} {_interval(*c.ci95)}",
            *(f"{c.components[name]:.3f}" for name in names), delta, record, _share(c.answered), changed,
            f"{c.mean_completion_tokens:.1f}",
        )  # fmt: skip
    return table


def _answers_table(result: PrefillProbe) -> Table:
    table = Table(title="parsed answers, share of rollouts (commonest first)", title_justify="left")
    table.add_column("condition", style="bold")
    table.add_column("top answers")
    for c in result.conditions:
        parts = [f"{_flat(answer, ANSWER_CHARS)} {share:.0%}" for answer, share in c.top_answers]
        table.add_row(Text(c.label), Text(" · ".join(parts)))
    return table


def _samples_table(result: PrefillProbe) -> Table:
    first = result.baseline.samples[0]
    title = f"example {first['example_id']}: {_flat(first['question'], 80)}  (gold: {first['gold']})"
    table = Table(title=Text(title), title_justify="left")
    for name in ("condition", "reply (first rollout)", "answer", "reward"):
        table.add_column(name, justify="right" if name == "reward" else "left")
    for c in result.conditions:
        sample = next((row for row in c.samples if row["example_id"] == first["example_id"]), None)
        if sample is not None:
            table.add_row(Text(c.label), Text(_flat(sample["completion"], COMPLETION_CHARS)),
                          Text(_flat(sample["answer"], ANSWER_CHARS)), f"{sample['reward']:.3f}")  # fmt: skip
    return table


# -- files ---------------------------------------------------------------------------------------------


def write_prefill(result: PrefillProbe, out_dir: str | Path) -> list[Path]:
    """``prefill.json`` (every number, per-example rewards and answers, sample replies) and
    ``prefill.png`` in ``out_dir``."""
    return write_numbers_and_plot(out_dir, "prefill", result.to_dict(), lambda: plot_prefill(result))


def plotted_answers(conditions: list[Condition]) -> list[str]:
    """The answers that get their own colour: the commonest of each condition in turn, up to the limit."""
    chosen: list[str] = []
    ranked = [list(c.answer_counts) for c in conditions]
    for depth in range(max((len(r) for r in ranked), default=0)):
        for answers in ranked:
            if depth < len(answers) and answers[depth] not in chosen and len(chosen) < ANSWERS_PLOTTED:
                chosen.append(answers[depth])
    return chosen


def plot_prefill(result: PrefillProbe):
    """Left: mean reward per condition with its 95% interval (the baseline's dashed across). Right: each
    condition's answers as one stacked bar of shares, with the share of answers changed against the
    baseline. With a second model, its row below, on the same reward scale."""
    plt = _pyplot()
    probes = result.models
    height = 0.9 + max(3.6, 0.55 * len(result.conditions) + 2.4)
    fig, axes = plt.subplots(len(probes), 2, figsize=(12.0, height * len(probes)), squeeze=False)
    low = min(0.0, *(c.ci95[0] for probe in probes for c in probe.conditions))
    high = max(0.0, *(c.ci95[1] for probe in probes for c in probe.conditions)) * 1.25 + 0.05
    for probe, (left, right) in zip(probes, axes, strict=True):
        _draw_prefill(probe, plt, left, right)
        left.set_ylim(low, high)
    return fig


def _draw_prefill(result: PrefillProbe, plt, left, right) -> None:
    conditions = result.conditions
    labels = [_plain(_cut(c.label, 18)) for c in conditions]
    xs = range(len(conditions))
    means = [c.mean_reward for c in conditions]
    # A bootstrap bound of equal values can sit a rounding error past the mean: never a negative bar.
    errors = [[max(0.0, m - c.ci95[0]) for m, c in zip(means, conditions, strict=True)],
              [max(0.0, c.ci95[1] - m) for m, c in zip(means, conditions, strict=True)]]  # fmt: skip
    colours = ["#8c8c8c"] + ["#3a7dc9"] * (len(conditions) - 1)
    left.bar(xs, means, yerr=errors, color=colours, capsize=5, edgecolor="black", linewidth=0.6)
    left.axhline(means[0], color="grey", linestyle="--", linewidth=0.9)
    for x, c in zip(xs, conditions, strict=True):
        note = "" if c.difference is None else f"Δ {c.difference['mean_diff']:+.3f}"
        left.text(x, c.ci95[1], f"{c.mean_reward:.3f}\n{note}", ha="center", va="bottom", fontsize=8)
    if len(conditions) > 2:  # long prefixes side by side would overlap
        left.set_xticks(list(xs), labels, rotation=20, ha="right")
    else:
        left.set_xticks(list(xs), labels)
    left.set_ylabel("mean reward (95% CI over examples)")
    left.set_title(
        f"Reward with a forced prefix: {_plain(result.model)} on {_plain(result.env)}\n"
        f"{result.num_examples} examples x {result.rollouts} rollouts, temperature {result.temperature:g}",
        fontsize=10,
    )
    left.grid(True, axis="y", alpha=0.3)

    answers = plotted_answers(conditions)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    segments = [*answers, "other"]
    for y, c in zip(xs, conditions, strict=True):
        total = sum(c.answer_counts.values()) or 1
        shares = [c.answer_counts.get(a, 0) / total for a in answers]
        shares.append(1.0 - sum(shares))
        start = 0.0
        for i, (segment, share) in enumerate(zip(segments, shares, strict=True)):
            colour = (
                "#d9d9d9" if segment == "other" else "#555555" if segment == NO_ANSWER else palette[i % 10]
            )
            label = _plain(_flat(segment, ANSWER_CHARS)) if y == 0 else None
            right.barh(y, share, left=start, color=colour, edgecolor="white", linewidth=0.6, label=label)
            start += share
        right.text(1.01, y, f"changed {_share(c.changed)}" if c.difference else f"noise {_share(c.changed)}",
                   va="center", fontsize=8)  # fmt: skip
    right.set_yticks(list(xs), labels)
    right.invert_yaxis()
    right.set_xlim(0.0, 1.0)
    right.set_xlabel("share of rollouts")
    right.set_title("Parsed answers per condition\n(changed: answer pairs differing from the baseline's)",
                    fontsize=10)  # fmt: skip
    right.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.16, 1.0), title="answer")
