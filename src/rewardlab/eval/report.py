"""A markdown report a person can read after a run: numbers, curves as images, and the evidence.

Everything in it is read back from the run store, so the report shows what was recorded, not what the
process happened to hold in memory.
"""

from __future__ import annotations

from pathlib import Path

from rewardlab.eval.compare import QUESTION_CHARS, Comparison
from rewardlab.eval.plots import plot_comparison, plot_curves, plot_training_dashboard


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def eval_table(summaries: dict[str, dict]) -> list[str]:
    """One column per evaluated model: reward, each component, pass@k, errors."""
    labels = list(summaries)
    first = summaries[labels[0]]
    lines = ["| metric | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    lines.append(
        "| mean reward ± std | "
        + " | ".join(f"{s['mean_reward']:.3f} ± {s['std_reward']:.3f}" for s in summaries.values())
        + " |"
    )
    for name in first["components"]:
        lines.append(
            f"| {name} | "
            + " | ".join(_fmt(s["components"].get(name, {}).get("mean")) for s in summaries.values())
            + " |"
        )
    for key in [k for k in first if k.startswith("pass@")]:
        lines.append(f"| {key} | " + " | ".join(_fmt(s.get(key)) for s in summaries.values()) + " |")
    lines.append("| errored rollouts | " + " | ".join(str(s["errors"]) for s in summaries.values()) + " |")
    lines.append(
        "| mean completion tokens | "
        + " | ".join(f"{s['mean_completion_tokens']:.1f}" for s in summaries.values())
        + " |"
    )
    return lines


def comparison_lines(comparison: Comparison, label_a: str, label_b: str, data: str = "held-out") -> list[str]:
    r = comparison.reward
    lines = [
        f"Paired over {r.n} {data} examples (each example's reward is the mean of its rollouts):",
        "",
        "| | mean | 95% bootstrap CI | win / tie / loss | sign test p |",
        "|---|---:|---:|---:|---:|",
        f"| reward, {label_b} − {label_a} | {r.mean_diff:+.3f} | [{r.ci95[0]:+.3f}, {r.ci95[1]:+.3f}] | "
        f"{r.wins} / {r.ties} / {r.losses} | {r.p_value_sign:.2g} |",
    ]
    for name, c in comparison.components.items():
        lines.append(
            f"| {name}, {label_b} − {label_a} | {c.mean_diff:+.3f} | [{c.ci95[0]:+.3f}, {c.ci95[1]:+.3f}]"
            f" | {c.wins} / {c.ties} / {c.losses} | {c.p_value_sign:.2g} |"
        )
    return lines


def breakdown_lines(table: dict, key: str, labels: list[str]) -> list[str]:
    lines = [f"| {key} | " + " | ".join(labels) + " | rollouts |", "|---|" + "---:|" * (len(labels) + 1)]
    for category in sorted(table):
        cells = [_fmt(table[category].get(label, (None, 0))[0]) for label in labels]
        count = max(n for _, n in table[category].values())
        lines.append(f"| {category} | " + " | ".join(cells) + f" | {count} |")
    return lines


def samples_lines(comparison: Comparison, label_a: str, label_b: str) -> list[str]:
    lines = [f"| question | reference | {label_a} | {label_b} |", "|---|---|---|---|"]

    def cell(text: str) -> str:
        return (
            "`" + text.replace("|", "\\|").replace("`", "'").replace("\n", " ") + "`" if text else "(empty)"
        )

    for s in comparison.samples:
        question = " ".join(s.question.split())
        if len(question) > QUESTION_CHARS:  # an event log or a board is too long for a table cell
            question = question[: QUESTION_CHARS - 1] + "…"
        lines.append(
            f"| {cell(question)} | {cell(s.answer)} | {cell(s.output_a)} ({s.reward_a:.2f}) | "
            f"{cell(s.output_b)} ({s.reward_b:.2f}) |"
        )
    return lines


def training_figures(metrics: dict, out_dir: Path) -> dict[str, Path]:
    figures = plot_training_dashboard(metrics, out_dir)
    zero_std = metrics.get("groups/zero_std_fraction")
    if zero_std:
        figures["zero_std"] = plot_curves(
            {"groups with no signal": zero_std},
            out_dir / "zero_std.png",
            "Groups whose completions all scored the same",
            "fraction",
            smooth=10,
        )
    return figures


def comparison_figure(comparison: Comparison, path: Path, title: str) -> Path:
    return plot_comparison([d for *_, d in comparison.reward.per_example], path, title)


def image(path: Path, relative_to: Path, alt: str) -> str:
    return f"![{alt}]({path.relative_to(relative_to).as_posix()})"
