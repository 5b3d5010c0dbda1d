"""Remote and asynchronous rollouts: wall time per step and the reward curves at max_off_policy_steps 0 and 1.

The demo's chain (the tiny model on arithmetic, its careless teacher), primed once by the demo's SFT and
merged, then trained with the demo's GRPO settings for ``--steps`` steps, three ways from the same primed
model:

- ``local``: sampled in process by the model being trained (the trainer's default), for reference;
- ``server k=0``: sampled by ``rewardlab serve`` in a process of its own, the adapter pushed after every
  update and each step sampled by the adapter of the step before;
- ``server k=1``: the same server, the next step's batch sampled while a step trains (one update stale).

The server runs on one thread and the trainer on one (``OMP_NUM_THREADS=1``), so on two cores sampling and
training can overlap. The arms run in interleaved rounds (round ``r`` trains every arm with seed ``r``), so a
change in the machine's load falls on all of them alike.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_async_rollouts.py --out async_bench --rounds 3

Writes ``OUT/results.json`` (resumable: runs already measured are kept), ``OUT/reward_curves.png`` and prints
a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from rewardlab.config import EvalConfig, SFTConfig, TrainConfig
from rewardlab.config.commands import DemoConfig
from rewardlab.demo import _eval_config, primed_model, stage_config
from rewardlab.eval.evaluate import evaluate
from rewardlab.runs import RunStore
from rewardlab.train.sft import run_sft
from rewardlab.train.trainer import train

sys.path.insert(0, str(Path(__file__).parent))
from server_process import ServerProcess  # noqa: E402

ARMS = {
    "local": {},
    "server k=0": {"rollout_engine": "server", "max_off_policy_steps": 0},
    "server k=1": {"rollout_engine": "server", "max_off_policy_steps": 1},
}


def serve_primed(primed: str, adapters: Path, log: Path) -> ServerProcess:
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "rewardlab.cli", "serve", "--model", primed, "--port", str(port),
                "--allow-runtime-adapters", "--adapter-dir", str(adapters)]  # fmt: skip

    server = ServerProcess("rewardlab", command, threads=1, log=log)
    server.wait_ready()
    return server


def measured(store: RunStore, run_id: str, wall: float, held_out: float) -> dict:
    metrics = store.metrics(run_id)

    def series(name: str) -> list[float]:
        return [value for _, value in metrics.get(name, [])]

    steps = series("time/step_seconds")[1:]  # the first step also warms up (and pushes the first adapter)
    return {
        "run": run_id,
        "wall_seconds": wall,
        "step_seconds_median": statistics.median(steps),
        "generation_seconds_median": statistics.median(series("time/generation_seconds")[1:]),
        "update_seconds_median": statistics.median(series("time/update_seconds")[1:]),
        "adapter_sync_seconds_median": statistics.median(series("time/adapter_sync_seconds")[1:-1] or [0.0]),
        "staleness_mean": statistics.fmean(series("async/staleness") or [0.0]),
        "reward": series("reward/mean"),
        "step_seconds": series("time/step_seconds"),
        "held_out": held_out,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="async_bench")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eval-examples", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    config = DemoConfig.model_validate({"runs_dir": str(out / "runs"), "eval": {"fresh": False}})
    store = RunStore(config.runs_dir)

    def held_out(model: str, label: str, seed: int) -> float:
        eval_config = _eval_config(config, label, model)
        eval_config = EvalConfig.model_validate(
            {**eval_config.model_dump(), "seed": seed, "num_examples": args.eval_examples}
        )
        return evaluate(eval_config, store).summary["mean_reward"]

    if "primed" not in results:
        sft = run_sft(
            stage_config(SFTConfig, config, config.sft, config.model.name_or_path, "async sft"), store
        )
        results["primed"] = primed_model(sft.model_dir, config)
        results["primed_held_out"] = held_out(results["primed"], "primed", 0)
        results_path.write_text(json.dumps(results, indent=2))
    primed = results["primed"]

    adapters = out / "adapters"
    adapters.mkdir(exist_ok=True)
    missing = [(seed, arm) for seed in range(args.rounds) for arm in ARMS if f"{arm}/{seed}" not in results]
    server = serve_primed(primed, adapters, out / "serve.log") if missing else None
    try:
        for seed, arm in missing:
            changes, key = ARMS[arm], f"{arm}/{seed}"
            if changes:
                changes = {
                    **changes,
                    "rollout_base_url": f"{server.url}/v1",
                    "rollout_adapter_dir": str(adapters),
                }
            train_config = stage_config(
                TrainConfig, config, config.train, primed, f"async {key}", seed=seed,
                max_steps=args.steps, log_rollouts_per_step=0, **changes,
            )  # fmt: skip
            trained = train(train_config, store)
            score = held_out(str(trained.run_dir), key, seed)
            results[key] = measured(store, trained.run_id, trained.wall_seconds, score)
            results_path.write_text(json.dumps(results, indent=2))
            shown = {k: v for k, v in results[key].items() if k not in ("reward", "step_seconds")}
            print(key, shown, flush=True)
    finally:
        if server is not None:
            server.stop()
    plot(results, args.rounds, out / "reward_curves.png")
    print(table(results, args.rounds))


def mean_curve(results: dict, arm: str, rounds: int) -> list[float]:
    curves = [results[f"{arm}/{seed}"]["reward"] for seed in range(rounds)]
    return [statistics.fmean(values) for values in zip(*curves, strict=True)]


def plot(results: dict, rounds: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for arm in ARMS:
        curve = mean_curve(results, arm, rounds)
        window = 5  # a trailing mean over 5 steps: one step's 128 rollouts are noisy
        smooth = [statistics.fmean(curve[max(0, i - window + 1) : i + 1]) for i in range(len(curve))]
        by_step.plot(range(1, len(curve) + 1), smooth, label=arm)
        seconds = [results[f"{arm}/{seed}"]["step_seconds"] for seed in range(rounds)]
        elapsed = [statistics.fmean(step) for step in zip(*seconds, strict=True)]
        by_time.plot([sum(elapsed[: i + 1]) for i in range(len(elapsed))], smooth, label=arm)
    by_step.set_xlabel("step")
    by_step.set_ylabel(f"training reward ({rounds} seeds, 5-step mean)")
    by_time.set_xlabel("seconds of training (steps' wall time, mean over seeds)")
    by_step.legend()
    fig.suptitle(
        "GRPO on the primed tiny model: rollouts in process vs from rewardlab serve (k: steps ahead)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results: dict, rounds: int) -> str:
    rows = [
        f"Primed model's held-out reward: {results['primed_held_out']:.3f}.",
        "",
        "| arm | step s (median) | waiting for the batch s | update s | adapter push s | staleness | "
        "reward, last 10 steps | held-out reward | run wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def spread(values: list[float], digits: int = 3) -> str:
        if len(values) == 1:
            return f"{values[0]:.{digits}f}"
        return f"{statistics.fmean(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"

    for arm in ARMS:
        runs = [results[f"{arm}/{seed}"] for seed in range(rounds)]
        rows.append(
            f"| {arm} | {spread([r['step_seconds_median'] for r in runs], 2)} "
            f"| {spread([r['generation_seconds_median'] for r in runs], 2)} "
            f"| {spread([r['update_seconds_median'] for r in runs], 2)} "
            f"| {spread([r['adapter_sync_seconds_median'] for r in runs], 2)} "
            f"| {statistics.fmean(r['staleness_mean'] for r in runs):.2f} "
            f"| {spread([statistics.fmean(r['reward'][-10:]) for r in runs])} "
            f"| {spread([r['held_out'] for r in runs])} "
            f"| {spread([r['wall_seconds'] for r in runs], 0)} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
