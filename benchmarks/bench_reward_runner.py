"""Per-call overhead of the isolated reward runner, against running reward functions inline.

    .venv/bin/python benchmarks/bench_reward_runner.py [--calls 256] [--repeats 30]

A trivial reward function is scored on ``--calls`` rollouts; the best of ``--repeats`` runs (after the pool
has started) is divided by the number of calls. Inline and process isolation run alternately in one
invocation so machine drift affects both alike; the ratio is what to read.
"""

from __future__ import annotations

import argparse
import os
import time

from rewardlab.rubrics import Rubric
from rewardlab.types import Example, Rollout


def trivial(completion: str) -> float:
    return float(len(completion) > 0)


def rollouts(count: int) -> list[Rollout]:
    example = Example("e", [{"role": "user", "content": "q"}], "a")
    return [Rollout(example, i, [{"role": "assistant", "content": f"answer {i}"}]) for i in range(count)]


def best_seconds(rubric: Rubric, batch: list[Rollout], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        rubric.score(batch)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    batch = rollouts(args.calls)
    setups = {"inline": Rubric([trivial], isolation="inline")}
    for workers in (1, 2, 4):
        setups[f"process, {workers} workers"] = Rubric([trivial], workers=workers)
    for rubric in setups.values():
        rubric.score(batch)  # start pools, warm caches
    results = {name: [] for name in setups}
    for _ in range(3):  # alternate so drift hits every setup
        for name, rubric in setups.items():
            results[name].append(best_seconds(rubric, batch, args.repeats // 3))
    inline = min(results["inline"]) / args.calls
    print(f"{args.calls} trivial calls, best of {args.repeats} runs, {os.cpu_count()} CPUs")
    print("| isolation | µs per call | × inline |")
    print("|---|---:|---:|")
    for name, times in results.items():
        per_call = min(times) / args.calls
        print(f"| {name} | {per_call * 1e6:.1f} | {per_call / inline:.1f} |")


if __name__ == "__main__":
    main()
