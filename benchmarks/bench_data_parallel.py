"""Steps per second of GRPO on the tiny model in one process and in two data-parallel processes (torchrun,
gloo on this machine's CPUs).

Arms, each the command line in a subprocess of its own, alternated round by round:

- ``1 process x 1 thread`` and ``1 process x 2 threads``: ``python -m rewardlab train``;
- ``1 process x 1 thread, seed_per_group``: each group drawn from its own random stream, as the
  data-parallel processes draw (what the per-row draws cost);
- ``2 processes x 1 thread``: ``torchrun --nproc-per-node 2 -m rewardlab train``.

A step's time is the run's logged ``time/step_seconds`` (rank 0's, collectives included); the first step
(warm-up) is left out and the median of the rest is taken.

    .venv/bin/python benchmarks/bench_data_parallel.py --steps 8 --rounds 2 --out dp

Writes ``dp/results.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rewardlab.runs import RunStore

SETTINGS = ["prompts_per_step=8", "group_size=8", "checkpoint_every=0", "log_rollouts_per_step=0"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def arms() -> dict[str, tuple[list[str], dict[str, str]]]:
    single = [sys.executable, "-m", "rewardlab"]
    return {
        "1 process x 1 thread": (single, {"OMP_NUM_THREADS": "1"}),
        "1 process x 1 thread, seed_per_group": (single, {"OMP_NUM_THREADS": "1", "SEED_PER_GROUP": "1"}),
        "1 process x 2 threads": (single, {"OMP_NUM_THREADS": "2"}),
        "2 processes x 1 thread": (
            [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
             "127.0.0.1", "--master-port", "PORT", "-m", "rewardlab"],
            {"OMP_NUM_THREADS": "1"},
        ),
    }  # fmt: skip


def run_arm(launch: list[str], env: dict[str, str], runs_dir: Path, steps: int, name: str) -> dict:
    settings = [*SETTINGS, f"max_steps={steps}", f"run_name={name}"]
    if env.pop("SEED_PER_GROUP", None):
        settings.append("seed_per_group=true")
    command = [word if word != "PORT" else str(free_port()) for word in launch]
    command += ["train", "--model", "tiny", "--env", "arithmetic", "--runs-dir", str(runs_dir)]
    command += [word for setting in settings for word in ("--set", setting)]
    started = time.perf_counter()
    subprocess.run(command, env={**os.environ, "REWARDLAB_QUIET": "1", **env}, check=True)
    wall = time.perf_counter() - started
    store = RunStore(runs_dir)
    run = store.get(name)
    seconds = [value for _, value in store.metrics(run.id)["time/step_seconds"]][1:]
    rewards = [value for _, value in store.metrics(run.id)["reward/mean"]]
    return {"step_seconds": statistics.median(seconds), "wall_seconds": wall, "rewards": rewards}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("dp"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {name: [] for name in arms()}
    for round_ in range(args.rounds):
        for name, (launch, env) in arms().items():
            label = f"{name.replace(' ', '_').replace(',', '')}-{round_}"
            results[name].append(run_arm(launch, dict(env), args.out / "runs", args.steps, label))
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    base = statistics.median(r["step_seconds"] for r in results["1 process x 1 thread"])
    print("| arm | median step (s) | steps/s | vs 1 process x 1 thread | launch to exit (s) |")
    print("|---|---|---|---|---|")
    for name, rounds in results.items():
        step = statistics.median(r["step_seconds"] for r in rounds)
        wall = statistics.median(r["wall_seconds"] for r in rounds)
        print(f"| {name} | {step:.3f} | {1 / step:.2f} | {base / step:.2f}x | {wall:.0f} |")


if __name__ == "__main__":
    main()
