"""What each entropy control does on the demo's task: entropy over training and held-out reward.

The demo's chain (tiny model, two-digit arithmetic, a careless teacher), primed once by SFT, then trained
with GRPO once per (arm, seed) and evaluated on the held-out split as the demo evaluates. Arms:

- baseline: the demo's settings;
- bonus: the adaptive entropy bonus (Skywork-OR1), its target the baseline's own entropy over its first
  ten steps at that seed (hold the primed policy's exploration where it started);
- clip_cov / kl_cov: Clip-Cov and KL-Cov on 2% of the tokens (the paper's 2e-4 / 2e-3 are fractions of
  batches with millions of tokens; this batch has about a thousand);
- adv_clip: advantages clipped to [-1, 1].

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/entropy_ablation.py --seeds 3 --out ablation

Writes ``ablation/results.json`` (resumable: arms already measured are kept) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from rewardlab.config import SFTConfig, TrainConfig
from rewardlab.config.commands import DemoConfig
from rewardlab.demo import _eval_config, primed_model, stage_config
from rewardlab.eval.evaluate import evaluate
from rewardlab.runs import RunStore
from rewardlab.train.sft import run_sft
from rewardlab.train.trainer import train

ARMS: dict[str, dict] = {
    "baseline": {},
    "bonus": {"entropy": {"target": None, "coef_step": 0.005, "coef_max": 0.1}},  # target set per seed
    "clip_cov": {"entropy": {"clip_cov_fraction": 0.02}},
    "kl_cov": {"entropy": {"kl_cov_fraction": 0.02, "kl_cov_coef": 1.0}},
    "adv_clip": {"entropy": {"advantage_clip": 1.0}},
}


def measured(store: RunStore, run_id: str, eval_summary: dict) -> dict:
    metrics = store.metrics(run_id)
    entropy = [value for _, value in metrics["entropy"]]
    tenth = max(1, len(entropy) // 10)
    out = {
        "held_out": eval_summary["mean_reward"],
        "held_out_correct": eval_summary["components"].get("correct", {}).get("mean"),
        "entropy_first": statistics.fmean(entropy[:tenth]),
        "entropy_last": statistics.fmean(entropy[-tenth:]),
        "entropy_min": min(entropy),
        "train_reward_last": statistics.fmean(v for _, v in metrics["reward/mean"][-tenth:]),
    }
    for name in ("entropy/cov_selected_fraction", "entropy/bonus_coef"):
        if name in metrics:
            out[name] = statistics.fmean(v for _, v in metrics[name])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="ablation")
    parser.add_argument("--arms", default=",".join(ARMS))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    config = DemoConfig.model_validate({"runs_dir": str(out / "runs"), "eval": {"fresh": False}})
    store = RunStore(config.runs_dir)

    if "primed" not in results:
        sft = run_sft(
            stage_config(SFTConfig, config, config.sft, config.model.name_or_path, "ablation sft"), store
        )
        results["primed"] = primed_model(sft.model_dir, config)
        base = evaluate(_eval_config(config, "base", results["primed"]), store)
        results["base_held_out"] = base.summary["mean_reward"]
    primed = results["primed"]

    for seed in range(args.seeds):
        for arm in args.arms.split(","):
            key = f"{arm}/{seed}"
            if key in results:
                continue
            changes = json.loads(json.dumps(ARMS[arm]))
            if arm == "bonus":
                changes["entropy"]["target"] = results[f"baseline/{seed}"]["entropy_first"]
            train_config = stage_config(
                TrainConfig, config, config.train, primed, f"ablation {key}", seed=seed, **changes
            )
            trained = train(train_config, store)
            tuned = evaluate(
                _eval_config(config, key, str(trained.run_dir)).model_copy(update={"seed": seed}), store
            )
            results[key] = {"run": trained.run_id, **measured(store, trained.run_id, tuned.summary)}
            results_path.write_text(json.dumps(results, indent=2))
            print(key, json.dumps(results[key]), flush=True)
    print(table(results, args.arms.split(","), args.seeds))


def table(results: dict, arms: list[str], seeds: int) -> str:
    rows = [
        f"Primed model's held-out reward: {results['base_held_out']:.3f}.",
        "",
        "| arm | held-out reward, mean (sd) | vs baseline, same seed | entropy: first → last 10% | lowest |",
        "|---|---:|---:|---:|---:|",
    ]
    for arm in arms:
        runs = [results.get(f"{arm}/{s}") for s in range(seeds)]
        if not all(runs):
            continue
        held = [r["held_out"] for r in runs]
        diffs = [r["held_out"] - results[f"baseline/{s}"]["held_out"] for s, r in enumerate(runs)]
        spread = (
            f"{statistics.fmean(held):.3f} ({statistics.stdev(held):.3f})" if seeds > 1 else f"{held[0]:.3f}"
        )
        vs = (
            "—"
            if arm == "baseline"
            else f"{statistics.fmean(diffs):+.3f} [{min(diffs):+.3f}, {max(diffs):+.3f}]"
        )
        first = statistics.fmean(r["entropy_first"] for r in runs)
        last = statistics.fmean(r["entropy_last"] for r in runs)
        lowest = min(r["entropy_min"] for r in runs)
        rows.append(f"| {arm} | {spread} | {vs} | {first:.3f} → {last:.3f} | {lowest:.3f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
