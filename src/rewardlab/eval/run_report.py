"""``report.md`` in every sft, train and eval run directory: what the run was, its numbers, its curves, and a
few of its rollouts, read back from the run store like everything else that is shown.

One PNG per run (several panels, one savefig) keeps the cost to a fraction of a second.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from rewardlab import atomic
from rewardlab.eval.plots import plot_eval_overview, plot_panels
from rewardlab.eval.report import eval_table
from rewardlab.runs.store import Run, RunStore

SAMPLES = 4  # rollouts shown in a report


def write_run_report(store: RunStore, run_id: str) -> Path:
    """Write ``<run>/report.md`` (and ``<run>/figures/``) for an sft, train or eval run; returns its path."""
    run = store.get(run_id)
    writer = {"sft": _sft_lines, "train": _train_lines, "eval": _eval_lines}[run.kind]
    path = run.dir / "report.md"
    atomic.write_text(path, "\n".join(writer(store, run)) + "\n")
    return path


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return "–" if value is None else str(value)


def _cell(text: Any) -> str:
    flat = " ".join(str(text).split()).replace("|", "\\|").replace("`", "'")
    return f"`{flat[:160]}`" if flat else "(empty)"


def _header(run: Run, what: str) -> list[str]:
    config = run.config
    model = (config.get("model") or {}).get("name_or_path", "?")
    env = config.get("env") or {}
    args = ", ".join(f"{k}={v}" for k, v in (env.get("args") or {}).items())
    seconds = run.summary.get("wall_seconds")
    wall = f"{seconds:.0f}s" if isinstance(seconds, int | float) else "–"
    return [
        f"# {what} `{run.id}`",
        "",
        f"Model `{model}` on environment `{env.get('name', '?')}`" + (f" ({args})" if args else "") + ".",
        f"Status {run.status}; seed {config.get('seed', '?')}; wall time {wall}.",
        "",
    ]


def _rollout_table(rows: list[dict]) -> list[str]:
    lines = ["| example | question | completion (last reply) | reward | errors |", "|---|---|---|---:|---|"]
    for row in rows:
        prompt = row.get("prompt") or [{}]
        replies = [m for m in row.get("completion") or [] if m.get("role") == "assistant"]
        errors = "; ".join(f"{k}: {v}" for k, v in (row.get("errors") or {}).items())
        question, reply = prompt[-1].get("content", ""), replies[-1]["content"] if replies else ""
        lines.append(
            f"| {row['example_id']} | {_cell(question)} | {_cell(reply)} | {_fmt(row['reward'])} | "
            f"{_cell(errors) if errors else ''} |"
        )
    return lines


def _train_lines(store: RunStore, run: Run) -> list[str]:
    metrics = store.metrics(run.id)
    rewards = {"mean": metrics.get("reward/mean", [])}
    rewards.update(
        {
            name.removeprefix("reward/"): points
            for name, points in metrics.items()
            if name.startswith("reward/") and name not in ("reward/mean", "reward/std")
        }
    )
    figure = plot_panels(
        {
            "Reward (mean and components)": rewards,
            "Policy entropy": {"entropy": metrics.get("entropy", [])},
            "Clipped token fraction": {
                "low": metrics.get("clip/low_fraction", []),
                "high": metrics.get("clip/high_fraction", []),
            },
            "Completion length (tokens)": {"mean": metrics.get("completion/mean_length", [])},
            "Groups with no signal": {"fraction": metrics.get("groups/zero_std_fraction", [])},
            "Errored rollouts": {"per step": metrics.get("errors/rollouts", [])},
        },
        run.dir / "figures" / "training.png",
    )
    summary, config = run.summary, run.config
    optimizer = config.get("optimizer") or {}
    lora = f"rank {config['lora']['rank']}" if (config.get("lora") or {}).get("enabled") else "off"
    last_step = max((step for step, _ in metrics.get("reward/mean", [])), default=None)
    samples = [r for r in store.rollouts(run.id, phase="train") if r["step"] == last_step][:SAMPLES]
    return [
        *_header(run, "Training run"),
        f"GRPO ({config.get('loss_type')}) for {config.get('max_steps')} steps of "
        f"{config.get('prompts_per_step')} prompts × {config.get('group_size')} completions, learning rate "
        f"{optimizer.get('learning_rate')}, LoRA {lora}.",
        "",
        "| final reward (last step) | errored rollouts | adapter |",
        "|---:|---:|---|",
        f"| {_fmt(summary.get('final_reward'))} | {_fmt(summary.get('reward_errors'), 0)} of "
        f"{_fmt(summary.get('rollouts'), 0)} | `{summary.get('adapter_dir', '–')}` |",
        "",
        *_health_and_cost(summary),
        "## Curves",
        "",
        f"![training curves]({figure.relative_to(run.dir).as_posix()})",
        "",
        f"## Rollouts of the last step ({len(samples)} of those stored)",
        "",
        *_rollout_table(samples),
        "",
        f"Every metric: `rewardlab runs show {run.id}`; more rollouts: add `--rollouts 20`.",
    ]


def _health_and_cost(summary: dict) -> list[str]:
    """The run's alerts and stops (from its live health checks and budget) and what it cost."""
    lines = ["## Health and cost", ""]
    alerts = summary.get("alerts")
    if alerts is None:
        lines.append("Health alerts were off for this run.")
    elif not alerts:
        lines.append("No health alert fired.")
    else:
        lines += ["| step | alert | action | message |", "|---:|---|---|---|"]
        lines += [f"| {a['step']} | {a['name']} | {a['action']} | {_cell(a['message'])} |" for a in alerts]
    for stop in summary.get("stops") or []:
        lines += ["", f"Stopped at step {stop['step']} ({stop['cause']}): {stop['reason']}"]
    cost = summary.get("cost")
    if cost:
        priced = cost.get("usd_per_hour") or cost.get("usd_per_million_tokens")
        usd = f"${cost['usd']:.4f}" if priced and cost.get("usd") is not None else "unpriced"
        lines += [
            "",
            f"Cost: {usd}; {_fmt(cost.get('tokens'), 0)} tokens, {cost.get('flops', 0):.3g} FLOPs "
            f"(estimated), {_fmt(cost.get('wall_seconds'), 0)} s.",
        ]
    return [*lines, ""]


def _eval_lines(store: RunStore, run: Run) -> list[str]:
    summary = run.summary
    rows = store.rollouts(run.id)
    by_example: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if not row.get("errors") and not row.get("error"):
            by_example[row["example_id"]].append(row["reward"])
    pass_at = {int(key.split("@")[1]): value for key, value in summary.items() if key.startswith("pass@")}
    figure = plot_eval_overview(
        [sum(values) / len(values) for values in by_example.values()],
        pass_at,
        run.dir / "figures" / "eval.png",
    )
    ranked = sorted(rows, key=lambda row: row["reward"] if not math.isnan(row["reward"]) else -math.inf)
    samples = (
        ranked[: SAMPLES // 2] + ranked[-(SAMPLES - SAMPLES // 2) :] if len(ranked) > SAMPLES else ranked
    )
    sampling = run.config.get("sampling") or {}
    lines = [
        *_header(run, "Evaluation"),
        f"Split `{run.config.get('split', '?')}`: {summary.get('num_examples')} examples × "
        f"{summary.get('rollouts_per_example')} rollouts at temperature {sampling.get('temperature', '?')}, "
        f"at most {summary.get('max_new_tokens', sampling.get('max_new_tokens', '?'))} new tokens a turn.",
        "",
        *eval_table({"this run": summary}),
        f"| latency per {summary.get('latency_per', 'rollout')}, mean / p50 / p95 (s) | "
        + " / ".join(_fmt(summary.get(k)) for k in ("latency_mean_s", "latency_p50_s", "latency_p95_s"))
        + " |",
        "",
        f"![rewards and pass@k]({figure.relative_to(run.dir).as_posix()})",
        "",
    ]
    if summary.get("error_samples"):
        lines += ["## Errors (the first)", "", *[f"- `{sample}`" for sample in summary["error_samples"]], ""]
    lines += [
        "## Rollouts (lowest and highest reward)",
        "",
        *_rollout_table(samples),
        "",
        f"Every rollout: `{run.dir / 'results.jsonl'}`.",
    ]
    return lines


def _sft_lines(store: RunStore, run: Run) -> list[str]:
    metrics = store.metrics(run.id)
    figure = plot_panels(
        {
            "Loss (completion tokens)": {"loss": metrics.get("loss", [])},
            "Learning rate": {"learning rate": metrics.get("learning_rate", [])},
        },
        run.dir / "figures" / "sft.png",
        smooth=0,
    )
    summary, config = run.summary, run.config
    optimizer = config.get("optimizer") or {}
    data = (
        config.get("data")
        or "the environment's demonstrations (demonstration(): the parser's format of the answer)"
    )
    return [
        *_header(run, "SFT run"),
        f"{config.get('max_steps')} steps of {config.get('batch_size')} sequences at learning rate "
        f"{optimizer.get('learning_rate')} ({optimizer.get('lr_scheduler')}), trained on {data}.",
        "",
        f"Final loss {_fmt(summary.get('final_loss'), 4)} over {summary.get('examples', '?')} prompts; "
        f"the primed model is `{summary.get('model_dir', '–')}`.",
        "",
        f"![loss]({figure.relative_to(run.dir).as_posix()})",
        "",
    ]
