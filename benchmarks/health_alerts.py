"""How close a train run came to each health alert, and how often the live reward-hacking alert fires on the
simulated runs of ``audit_simulation.py``: the numbers docs/training.md quotes ("Run health alerts").

    .venv/bin/python benchmarks/health_alerts.py margins RUN --runs-dir runs
    .venv/bin/python benchmarks/health_alerts.py demo --seed 0 --runs-dir /tmp/demo-runs
    .venv/bin/python benchmarks/health_alerts.py hacking --runs 1000

``demo`` runs the demo's SFT and GRPO stages (``DemoConfig``'s defaults: the tiny model on arithmetic),
then ``margins`` on its GRPO run, and prints what it cost. ``margins`` reads a train run's metrics and
prints, for each rule, the value that came nearest its default threshold (and the alerts the run recorded).
``hacking`` feeds simulated runs, step by step, to the alerts with their default settings, as a train run
would (the audit's test judged at every step from ``hacking_min_steps`` on, firing once it held
``hacking_hold_steps`` steps in a row), and prints the share of runs alerted on in each scenario: false
alarms for the honest ones, detections for the hacks.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

from rewardlab.config.sections import HealthConfig
from rewardlab.runs import RunStore
from rewardlab.train.health import Judge

sys.path.insert(0, str(Path(__file__).parent))
from audit_simulation import SCENARIOS, WEIGHTS, simulate  # noqa: E402


def margins(run_ref: str, runs_dir: str) -> None:
    config = HealthConfig()
    store = RunStore(runs_dir)
    run = store.get(run_ref)
    metrics = {name: [value for _, value in points] for name, points in store.metrics(run.id).items()}
    k = config.baseline_steps

    def early_ratios(values):
        return [
            values[i] / np.mean(values[: min(k, i)])
            for i in range(1, len(values))
            if np.mean(values[: min(k, i)])
        ]

    entropy = metrics["entropy"]
    clipped = np.add(metrics["clip/low_fraction"], metrics["clip/high_fraction"])
    grad = metrics["grad_norm"]
    grad_ratios = [
        grad[i] / statistics.median(grad[max(0, i - config.grad_norm_window) : i])
        for i in range(k, len(grad))
    ]
    cut = metrics["completion/truncated_fraction"]
    rises = [cut[i] - np.mean(cut[: min(k, i)]) for i in range(1, len(cut))]
    streak = longest = 0
    for value in metrics["groups/zero_std_fraction"]:
        streak = streak + 1 if value == 1.0 else 0
        longest = max(longest, streak)
    rows = [
        ("entropy_collapse", "lowest entropy", min(entropy), f"< {config.entropy_min:g}"),
        (
            "entropy_collapse",
            "lowest entropy / early level",
            min(early_ratios(entropy)),
            f"< {config.entropy_min_fraction:g}",
        ),
        ("clip_spike", "highest clipped fraction", max(clipped), f"> {config.clip_fraction_max:g}"),
        (
            "grad_norm_spike",
            "highest grad_norm / recent median",
            max(grad_ratios),
            f"> {config.grad_norm_factor:g}",
        ),
        (
            "length_explosion",
            "highest mean length / early level",
            max(early_ratios(metrics["completion/mean_length"])),
            f"> {config.length_factor:g}",
        ),
        (
            "truncation_surge",
            "highest truncated fraction - early level",
            max(rises),
            f">= {config.truncation_rise:g}",
        ),
        (
            "no_signal",
            "longest stretch of groups/zero_std_fraction = 1",
            longest,
            f">= {config.no_signal_steps}",
        ),
    ]
    if "kl" in metrics:
        rows.append(("kl_blowup", "highest kl", max(metrics["kl"]), f"> {config.kl_max:g}"))
    print(f"run {run.id}: {len(entropy)} steps")
    print("| alert | nearest approach | value | fires at |\n|---|---|---:|---|")
    for alert, what, value, threshold in rows:
        print(f"| {alert} | {what} | {value:.3g} | {threshold} |")
    print(f"alerts recorded: {run.summary.get('alerts')}")


def demo(seed: int, runs_dir: str) -> None:
    from rewardlab.config import DemoConfig, SFTConfig, TrainConfig
    from rewardlab.demo import primed_model, stage_config
    from rewardlab.train.sft import run_sft
    from rewardlab.train.trainer import train

    config = DemoConfig.model_validate({"runs_dir": runs_dir, "seed": seed})
    store = RunStore(runs_dir)
    sft = run_sft(stage_config(SFTConfig, config, config.sft, config.model.name_or_path, "sft"), store)
    start = primed_model(sft.model_dir, config)
    result = train(stage_config(TrainConfig, config, config.train, start, "grpo"), store)
    margins(result.run_id, runs_dir)
    print(f"cost: {store.get(result.run_id).summary['cost']}")


def hacking(runs: int, steps_list: list[int], rollouts: int, seed: int = 0) -> None:
    config = HealthConfig()
    rubric = {"weights": WEIGHTS, "primary": "correct"}
    names = list(SCENARIOS)
    print("| steps | " + " | ".join(names) + " |\n|---:|" + "---:|" * len(names))
    for steps in steps_list:
        rng = np.random.default_rng(seed)
        rates = {}
        for name, params in SCENARIOS.items():
            alerted = 0
            for _ in range(runs):
                series = simulate(rng, steps, rollouts, **params)
                judge = Judge(config, rubric)  # the rules and debouncing a train run uses
                for step in range(1, steps + 1):
                    judge.step(step, {f"reward/{c}": points[step] for c, points in series.items()})
                alerted += bool(judge.alerts)
            rates[name] = alerted / runs
        print(f"| {steps} | " + " | ".join(f"{rates[n]:.1%}" for n in names) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("margins", help="How near a train run came to each alert.")
    show.add_argument("run")
    show.add_argument("--runs-dir", default="runs")
    stages = commands.add_parser("demo", help="The demo's SFT and GRPO stages, then margins.")
    stages.add_argument("--seed", type=int, default=0)
    stages.add_argument("--runs-dir", default="runs")
    live = commands.add_parser("hacking", help="The live reward-hacking alert on simulated runs.")
    live.add_argument("--runs", type=int, default=200, help="Simulated runs per scenario and length.")
    live.add_argument("--steps", type=int, nargs="+", default=[30, 60, 100])
    live.add_argument("--rollouts", type=int, default=32)
    args = parser.parse_args()
    if args.command == "margins":
        margins(args.run, args.runs_dir)
    elif args.command == "demo":
        demo(args.seed, args.runs_dir)
    else:
        hacking(args.runs, args.steps, args.rollouts)


if __name__ == "__main__":
    main()
