"""The demo's ``report.md``: what each stage did, the paired differences, the evidence, the curves.

It says only what the result holds and what the environment says of itself (its name, description and
arguments), so the same report reads right for any model and environment the demo ran on. Curves and
breakdowns are read back from the run store, like every other report.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rewardlab.eval.compare import Comparison
from rewardlab.eval.report import (
    breakdown_lines,
    comparison_figure,
    comparison_lines,
    eval_table,
    image,
    samples_lines,
    training_figures,
)
from rewardlab.eval.verdict import render as render_verdict
from rewardlab.runs import RunStore

if TYPE_CHECKING:
    from rewardlab.demo import DemoResult

CHANGED = 0.005  # a breakdown cell that moved less than this is not called a change


def render(result: DemoResult, store: RunStore | None = None) -> Path:
    """Write ``report.md`` (and its ``figures/``) in the demo's run directory; returns its path."""
    store = store or RunStore(result.config.runs_dir)
    out = result.run_dir
    figures = training_figures(store.metrics(result.runs["train"]), out / "figures")
    difference = comparison_figure(
        result.held_out, out / "figures" / "difference.png", "Per-example reward difference, tuned − base"
    )
    lines = [
        "# rewardlab demo report",
        "",
        *_setup(result),
        "",
        "## Held-out results",
        "",
        *_held_out(result),
        image(difference, out, "per-example difference"),
        "",
        *_fresh(result),
        *_verdict_section(result),
        *_control(result),
        *_breakdowns(result),
        "## Training curves",
        "",
    ]
    for name, path in figures.items():
        lines += [image(path, out, name), ""]
    lines += [
        "## Debug samples (largest per-example differences)",
        "",
        *samples_lines(result.held_out, "base", "tuned"),
        "",
        "## Timings",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *[f"| {stage} | {seconds:.1f} |" for stage, seconds in result.timings.items()],
        "",
        "## Reproduce",
        "",
        f"`rewardlab demo --config {out / 'demo.toml'}` (the config this demo ran with) — runs: "
        + ", ".join(f"{stage} `{run}`" for stage, run in result.runs.items()),
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def closing_lines(result: DemoResult) -> list[str]:
    """The headline, as ``rewardlab demo`` prints it after the comparison table."""
    lines = [f"held-out reward: {_change(*_held_out_pair(result))}"]
    if result.fresh is not None:
        fresh = "skipped" if result.fresh.skipped else _change(*_fresh_pair(result))
        lines.append(f"fresh data: {fresh}")
    if result.control_vs_base is not None:
        c = result.control_vs_base.reward
        lines.append(
            f"control (more SFT): {c.mean_b:.3f}, difference vs base {c.mean_diff:+.3f} "
            f"[{c.ci95[0]:+.3f}, {c.ci95[1]:+.3f}]"
        )
    if result.verdict is not None:
        lines += render_verdict(result.verdict, "tuned")
    lines += [f"report: {result.report_path}", f"wall time: {result.wall_seconds:.0f}s"]
    return lines


# (comparison, base mean reward, tuned mean reward): the means are the eval summaries', which the relative
# gain is taken against, as in summary.json.
def _held_out_pair(result: DemoResult) -> tuple[Comparison, float, float]:
    return result.held_out, result.base.summary["mean_reward"], result.tuned.summary["mean_reward"]


def _fresh_pair(result: DemoResult) -> tuple[Comparison, float, float]:
    fresh = result.fresh
    return fresh.comparison, fresh.summary_a["mean_reward"], fresh.summary_b["mean_reward"]


def _relative(comparison: Comparison) -> str:
    """``; correct_answer +26% [+18%, +35%]``: the relative gain on the primary component, or why none."""
    gain = comparison.relative
    if gain is None or gain.value is None:
        return f"; relative gain n/a ({gain.reason if gain else 'no primary component'})"
    interval = f" [{gain.ci95[0]:+.0%}, {gain.ci95[1]:+.0%}]" if gain.ci95 else ""
    return f"; {gain.component} {gain.value:+.0%}{interval} relative"


def _change(comparison: Comparison, base: float, tuned: float) -> str:
    low, high = comparison.reward.ci95
    return (
        f"base [bold]{base:.3f}[/] -> tuned [bold]{tuned:.3f}[/], 95% CI of the difference "
        f"[{low:+.3f}, {high:+.3f}]{_relative(comparison)}"
    )


def _setup(result: DemoResult) -> list[str]:
    config = result.config
    args = ", ".join(f"{key}={value}" for key, value in config.env.args.items())
    sft, train = config.sft, config.train
    return [
        f"Environment `{result.env_name}`: {result.env_description or '(no description)'}"
        + (f" Arguments: {args}." if args else ""),
        "",
        f"Model `{config.model.name_or_path}` ({config.model.dtype}), primed with SFT on the environment's "
        f"demonstrations ({_n(sft.max_steps, 'step')} of {_n(sft.batch_size, 'sequence')}"
        f"{_lora(sft.lora)}), then trained with GRPO against its rubric ({_n(train.max_steps, 'step')} of "
        f"{_n(train.prompts_per_step, 'prompt')} × {_n(train.group_size, 'completion')}, {train.loss_type} "
        f"loss{_lora(train.lora)}). "
        f"Seed {config.seed}; wall time {result.wall_seconds:.0f}s.",
    ]


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _lora(lora) -> str:
    return f", LoRA rank {lora.rank}" if lora.enabled else ", every weight"


def _verdict(comparison: Comparison, data: str) -> list[str]:
    r = comparison.reward
    lines = [
        f"**Tuned vs base on {data} data: {r.mean_diff:+.3f} mean reward, paired 95% CI "
        f"[{r.ci95[0]:+.3f}, {r.ci95[1]:+.3f}]{_relative(comparison)}.**",
        "",
        f"The interval is a {r.method}, for this one trained model; the relative gain is taken on the "
        "primary component, with its own interval.",
    ]
    return lines + [f"Warning: {warning}." for warning in comparison.warnings]


def _held_out(result: DemoResult) -> list[str]:
    sampling = result.config.eval.sampling
    summaries = {"base (primed)": result.base.summary, "tuned (GRPO)": result.tuned.summary}
    if result.control is not None:
        summaries["control (more SFT)"] = result.control.summary
    rollouts = _n(result.base.summary["rollouts_per_example"], "rollout")
    lines = [
        f"{result.base.summary['num_examples']} held-out examples (never seen in training) × {rollouts} at "
        f"temperature {sampling.temperature}.",
        "",
        *eval_table(summaries),
        "",
        *comparison_lines(result.held_out, "base", "tuned"),
        "",
        *_verdict(result.held_out, "held-out"),
        "",
    ]
    if result.greedy:
        base, tuned = result.greedy["base"]["mean_reward"], result.greedy["tuned"]["mean_reward"]
        direction = "the same" if (tuned > base) == (result.held_out.reward.mean_diff > 0) else "the opposite"
        lines += [
            f"Greedy decoding (temperature 0, one answer per example): mean reward {base:.3f} for the base "
            f"and {tuned:.3f} tuned ({tuned - base:+.3f}), {direction} direction as sampled. A change that "
            "holds at temperature 0 is more than a sharper sampling distribution.",
            "",
        ]
    return lines


def _fresh(result: DemoResult) -> list[str]:
    if result.fresh is None:
        return []
    if result.fresh.skipped:
        return ["## Fresh data", "", f"Skipped: {result.fresh.skipped}.", ""]
    comparison = result.fresh.comparison
    return [
        "## Fresh data",
        "",
        f"{result.fresh.examples} examples generated for this comparison, from the held-out side of the "
        "environment's split and with another seed: data no choice of the demo's settings could have seen.",
        "",
        *comparison_lines(comparison, "base", "tuned", "fresh"),
        "",
        *_verdict(comparison, "fresh"),
        "",
    ]


def _verdict_section(result: DemoResult) -> list[str]:
    """The pass/fail verdict on held-out and fresh, and what the tuning cost per point."""
    if result.verdict is None:
        return []
    headline, *checks, cost = render_verdict(result.verdict, "tuned")
    return [
        "## Verdict",
        "",
        f"**{headline}**",
        "",
        *(f"- {check.strip()}" for check in checks),
        "",
        f"{cost[0].upper()}{cost[1:]}. It counts the training runs tuned descends from and base does not: "
        "the GRPO run, not the SFT priming both share.",
        "",
    ]


def _control(result: DemoResult) -> list[str]:
    if result.control_vs_base is None:
        return []
    c, d = result.control_vs_base.reward, result.held_out.reward
    return [
        "## How we know RL, not more SFT, moved the number",
        "",
        "The control continued SFT from the same primed model on the same demonstrations for as many "
        f"training sequences as GRPO sampled ({result.control_sequences}). Its held-out reward moved "
        f"{c.mean_diff:+.3f} (95% CI [{c.ci95[0]:+.3f}, {c.ci95[1]:+.3f}]) against GRPO's "
        f"{d.mean_diff:+.3f}.",
        "",
        *comparison_lines(result.control_vs_base, "base", "control"),
        "",
    ]


def _breakdowns(result: DemoResult) -> list[str]:
    labels = ["base", "tuned"] + (["control"] if result.control is not None else [])
    lines = []
    for key, table in result.breakdowns.items():
        lines += [
            f"## By `{key}`",
            "",
            f"The primary component, `{result.primary}`, by each held-out example's `info` value `{key}`:",
            "",
            *breakdown_lines(table, key, labels),
            "",
            *_losses(table, key, result.primary),
        ]
    return lines


def _losses(table: dict, key: str, component: str | None) -> list[str]:
    """Say plainly where training cost something, so a reader does not have to spot it in the table."""
    lines = []
    for value in sorted(table):
        cells = table[value]
        if "base" in cells and "tuned" in cells and cells["tuned"][0] < cells["base"][0] - CHANGED:
            lines.append(
                f"The price: where `{key}` is {value}, `{component}` went from {cells['base'][0]:.3f} to "
                f"{cells['tuned'][0]:.3f}."
            )
    return [*lines, ""] if lines else []
