"""Adaptive curriculum against uniform sampling: held-out reward after the same number of GRPO steps.

The demo's chain on arithmetic levels 1-3 instead of level 2 alone: the demo's SFT priming on the careless
teacher's demonstrations (once; every arm and seed starts from that model), then the demo's GRPO settings
(16 prompts x 8 completions, two passes per batch, LoRA rank 16, learning rate 2e-3) for each arm and seed:

* ``uniform``: no curriculum (every training problem shuffled together, the trainer's default);
* ``adaptive``: ``curriculum.mode = "adaptive"`` at its defaults (start on level 1, promote when the pass
  rate over the last 5 steps reaches 0.8, a quarter of each step's prompts reviewing easier levels);
* ``fixed`` (when asked for): the levels in order, equal shares of the steps.

Every checkpoint (``--checkpoint-every``) is evaluated on the same held-out problems (levels 1-3 mixed, the
environment's held-out split) with the demo's evaluation settings (4 rollouts each at temperature 1, one
evaluation seed for all), so the arms are compared on the same records. Steps-to-target is the first
checkpoint whose held-out mean reward is at least the primed model's plus the target.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/curriculum_vs_uniform.py --out curriculum_bench

Results go to ``OUT/results.json`` (``results-lr0.0005.json`` with ``--learning-rate 5e-4``; each finished
arm and seed is kept, so an interrupted invocation goes on where it stopped) and the tables to
``OUT/table.md`` (``table-lr0.0005.md``). Every checkpoint of every run is kept, for its evaluation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

from rewardlab.config import DemoConfig, SFTConfig, TrainConfig
from rewardlab.config.commands import DEMO_ENV_ARGS
from rewardlab.demo import _eval_config, primed_model, stage_config
from rewardlab.eval.evaluate import evaluate
from rewardlab.runs import RunStore
from rewardlab.train import checkpoint
from rewardlab.train.sft import run_sft
from rewardlab.train.trainer import train

LEVELS = [1, 2, 3]
ARMS = {"uniform": {"mode": "off"}, "adaptive": {"mode": "adaptive"}, "fixed": {"mode": "fixed"}}


def demo_config(out: Path, seed: int = 0) -> DemoConfig:
    """The demo's config (its SFT, GRPO and eval settings) on arithmetic levels 1-3 instead of level 2."""
    return DemoConfig(
        seed=seed,
        runs_dir=str(out / "runs"),
        env={"name": "arithmetic", "args": {**DEMO_ENV_ARGS, "level": LEVELS}},
    )


def prime(out: Path, store: RunStore) -> str:
    """The demo's SFT priming, once: every arm and seed starts from this model."""
    record = out / "primed.json"
    if record.exists():
        return json.loads(record.read_text())["model"]
    config = demo_config(out)
    sft = run_sft(stage_config(SFTConfig, config, config.sft, config.model.name_or_path, "priming"), store)
    model = primed_model(sft.model_dir, config)
    record.write_text(json.dumps({"model": model, "sft_run": sft.run_id, "seconds": sft.wall_seconds}))
    return model


def held_out(out: Path, store: RunStore, model: str, label: str, num_examples: int | None) -> dict:
    """Held-out mean reward, correctness, and correctness per level of ``model`` (same records, same seed)."""
    config = _eval_config(demo_config(out), label, model).model_copy(update={"num_examples": num_examples})
    result = evaluate(config, store)
    by_level: dict[int, list[float]] = defaultdict(list)
    for scored in result.scored:
        by_level[scored.rollout.example.info["level"]].append(scored.components.get("correct") or 0.0)
    return {
        "reward": result.summary["mean_reward"],
        "correct": result.summary["components"]["correct"]["mean"],
        "correct_by_level": {level: statistics.fmean(v) for level, v in sorted(by_level.items())},
        "rollouts_by_level": {level: len(v) for level, v in sorted(by_level.items())},
    }


def run_arm(out: Path, store: RunStore, primed: str, arm: str, seed: int, args) -> dict:
    config = demo_config(out, seed)
    train_config = stage_config(
        TrainConfig,
        config,
        config.train,
        primed,
        f"{arm} seed {seed}" + (f" lr {args.learning_rate:g}" if args.learning_rate else ""),
        max_steps=args.steps,
        checkpoint_every=args.checkpoint_every,
        curriculum=ARMS[arm],
        **(
            {"optimizer": {**config.train.optimizer.model_dump(), "learning_rate": args.learning_rate}}
            if args.learning_rate
            else {}
        ),
    )
    started = time.perf_counter()
    result = train(train_config, store)
    seconds = time.perf_counter() - started
    curve = {}
    for step in range(args.checkpoint_every, args.steps + 1, args.checkpoint_every):
        model = str(checkpoint.path(result.run_dir, step))
        curve[step] = held_out(out, store, model, f"{arm} seed {seed} step {step}", args.eval_examples)
        print(f"  {arm} seed {seed} step {step}: held-out reward {curve[step]['reward']:.3f}", flush=True)
    return {
        "arm": arm,
        "seed": seed,
        "run": result.run_id,
        "train_seconds": seconds,
        "promotions": store.get(result.run_id).summary.get("curriculum", []),
        "curve": curve,
    }


def steps_to(curve: dict, target: float) -> int | None:
    return next(
        (
            int(step)
            for step, point in sorted(curve.items(), key=lambda kv: int(kv[0]))
            if point["reward"] >= target
        ),
        None,
    )


def tables(results: dict, targets: list[float]) -> str:
    base = results["base"]
    runs = results["runs"]
    arms = sorted({r["arm"] for r in runs}, key=list(ARMS).index)
    steps = sorted({int(s) for r in runs for s in r["curve"]})
    lines = [
        f"Primed model (step 0): held-out reward {base['reward']:.3f}, correct {base['correct']:.3f} "
        f"(by level: {', '.join(f'{k}: {v:.2f}' for k, v in base['correct_by_level'].items())}).",
        "",
        "Held-out mean reward, mean ± sd over seeds (each seed's value in brackets):",
        "",
        "| step | " + " | ".join(arms) + " |",
        "|---:|" + "---:|" * len(arms),
    ]
    for step in steps:
        cells = []
        for arm in arms:
            values = [r["curve"][str(step)]["reward"] for r in runs if r["arm"] == arm]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(
                f"{statistics.fmean(values):.3f} ± {sd:.3f} ({' / '.join(f'{v:.3f}' for v in values)})"
            )
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines += ["", "Steps to reach the primed model's held-out reward plus a target (per seed; — never):", ""]
    lines += ["| target | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for target in targets:
        cells = []
        for arm in arms:
            reached = [steps_to(r["curve"], base["reward"] + target) for r in runs if r["arm"] == arm]
            cells.append(" / ".join("—" if s is None else str(s) for s in reached))
        lines.append(f"| +{target:.2f} (≥ {base['reward'] + target:.3f}) | " + " | ".join(cells) + " |")
    last = str(steps[-1])
    lines += ["", f"Held-out correctness by level at step {last}, mean over seeds:", ""]
    levels = list(base["correct_by_level"])
    lines += ["| arm | " + " | ".join(f"level {k}" for k in levels) + " |", "|---|" + "---:|" * len(levels)]
    lines.append("| primed | " + " | ".join(f"{base['correct_by_level'][k]:.3f}" for k in levels) + " |")
    for arm in arms:
        own = [r["curve"][last]["correct_by_level"] for r in runs if r["arm"] == arm]
        lines.append(
            f"| {arm} | " + " | ".join(f"{statistics.fmean(o[k] for o in own):.3f}" for k in levels) + " |"
        )
    promoted = [r for r in runs if r["promotions"]]
    if promoted:
        lines += ["", "Promotions (step: from -> to, training pass rate):", ""]
        for r in promoted:
            events = ", ".join(
                f"{p['step']}: {p['from']}->{p['to']} ({p['pass_rate']:.2f})" for p in r["promotions"]
            )
            lines.append(f"- {r['arm']} seed {r['seed']}: {events}")
    seconds = defaultdict(list)
    for r in runs:
        seconds[r["arm"]].append(r["train_seconds"])
    lines += [
        "",
        "Training wall time per run (s): "
        + ", ".join(f"{arm} {statistics.fmean(v):.0f}" for arm, v in seconds.items()),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("curriculum_bench"))
    parser.add_argument("--arms", default="uniform,adaptive", help="uniform, adaptive, fixed")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1 per arm")
    parser.add_argument("--steps", type=int, default=150, help="GRPO steps per run (the demo's 150)")
    parser.add_argument("--checkpoint-every", type=int, default=25, help="evaluate every N steps")
    parser.add_argument("--eval-examples", type=int, default=None, help="held-out problems (default: all)")
    parser.add_argument("--targets", default="0.05,0.10", help="held-out reward gains over the primed model")
    parser.add_argument(
        "--learning-rate", type=float, default=None, help="GRPO learning rate (default: the demo's 2e-3)"
    )
    parser.add_argument("--prime-only", action="store_true", help="only the shared SFT priming")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    store = RunStore(args.out / "runs")
    checkpoint.KEEP = 10**6  # keep every checkpoint: each one is evaluated
    primed = prime(args.out, store)
    if args.prime_only:
        return
    suffix = f"-lr{args.learning_rate:g}" if args.learning_rate else ""
    path = args.out / f"results{suffix}.json"
    results = json.loads(path.read_text()) if path.exists() else {"runs": []}
    if "base" not in results:
        base = held_out(args.out, store, primed, "primed", args.eval_examples)
        results["base"] = json.loads(json.dumps(base))  # as read back: levels become strings
    results["settings"] = {k: str(v) for k, v in vars(args).items()}
    done = {(r["arm"], r["seed"]) for r in results["runs"]}
    for seed in range(args.seeds):  # arms alternate within a seed, so a cut-short invocation stays paired
        for arm in args.arms.split(","):
            if (arm, seed) in done:
                continue
            results["runs"].append(json.loads(json.dumps(run_arm(args.out, store, primed, arm, seed, args))))
            path.write_text(json.dumps(results, indent=2))
    table = tables(results, [float(t) for t in args.targets.split(",")])
    (args.out / f"table{suffix}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
