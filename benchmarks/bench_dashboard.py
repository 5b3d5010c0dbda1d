"""How fast the dashboard's API answers on a large store, through FastAPI's TestClient (no network).

Builds a synthetic store in a temporary directory through the store's own writes: one train run of 5,000
steps with the metrics the trainer logs (``reward/*``, entropy, clip fractions, KL, grad norm, lengths,
truncation, zero-signal groups, timings: 22 series) and 10,000 stored rollouts (8 per step for 1,250 steps,
multi-turn), a few alerts, an eval run of 2,000 rollouts, and 200 more runs for the runs list. Then times each
route the pages call (median of ``--repeats``), with the payload size, beside what the same data would cost
without server-side thinning or SQL paging.

    .venv/bin/python benchmarks/bench_dashboard.py
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from rewardlab.dashboard.app import create_app
from rewardlab.runs import RunStore
from rewardlab.types import Example, Rollout, ScoredRollout

STEPS = 5000
ROLLOUTS_PER_STEP = 8
ROLLOUT_STEPS = 1250  # 8 x 1,250 = 10,000 rollouts
EXTRA_RUNS = 200


def metrics_at(step: int, rng: random.Random) -> dict[str, float]:
    progress = step / STEPS
    noise = lambda scale: rng.gauss(0, scale)  # noqa: E731
    return {
        "reward/mean": 0.2 + 0.6 * progress + noise(0.05),
        "reward/std": 0.3 + noise(0.02),
        "reward/correct": 0.1 + 0.7 * progress + noise(0.05),
        "reward/format": min(1.0, 0.5 + progress + noise(0.05)),
        "entropy": 2.0 * math.exp(-2 * progress) + 0.1 + noise(0.02),
        "clip/low_fraction": abs(noise(0.01)),
        "clip/high_fraction": abs(noise(0.02)),
        "kl": 0.01 * progress + abs(noise(0.002)),
        "grad_norm": 0.5 + abs(noise(0.2)) + (30.0 if step == 3777 else 0.0),
        "completion/mean_length": 40 + 20 * progress + noise(2),
        "completion/max_length": 64.0,
        "completion/truncated_fraction": abs(noise(0.03)),
        "groups/zero_std_fraction": min(1.0, abs(noise(0.1)) + progress * 0.3),
        "loss": noise(0.1),
        "learning_rate": 2e-3,
        "errors/rollouts": 0.0,
        "cost/tokens": 800.0 * step,
        "cost/wall_seconds": 1.5 * step,
        "time/step_seconds": 1.5 + abs(noise(0.1)),
        "time/generation_seconds": 1.0 + abs(noise(0.1)),
        "time/update_seconds": 0.5 + abs(noise(0.05)),
        "throughput/tokens_per_second": 500 + noise(20),
    }


def rollouts_at(step: int, count: int, rng: random.Random) -> list[ScoredRollout]:
    out = []
    for i in range(count):
        a, b = rng.randrange(100), rng.randrange(100)
        prompt = [{"role": "user", "content": f"What is {a}+{b}? Use the calculator."}]
        example = Example(f"train-{a}+{b}", prompt, str(a + b), {"level": 2})
        completion = [
            {"role": "assistant", "content": f"<tool>calculator</tool><args>{a}+{b}</args> " * 2},
            {"role": "tool", "content": f"{a + b}"},
            {"role": "assistant", "content": f"<think>the tool says {a + b}</think><answer>{a + b}</answer>"},
        ]
        rollout = Rollout(example, i, completion, num_turns=2, truncated=False)
        correct = float(rng.random() < step / ROLLOUT_STEPS)
        out.append(ScoredRollout(rollout, correct + 0.1, {"correct": correct, "format": 1.0}))
    return out


def build(root: Path, seed: int = 0) -> dict[str, str]:
    rng = random.Random(seed)
    store = RunStore(root)
    started = time.perf_counter()
    trained = store.create_run("train", {"model": {"name_or_path": "tiny"}, "env": {"name": "tool_math"}},
                               manifest={}, name="big run")  # fmt: skip
    for step in range(1, STEPS + 1):
        store.log_metrics(trained.id, step, metrics_at(step, rng))
        if step in (1200, 3777):
            name = "entropy_collapse" if step == 1200 else "grad_norm_spike"
            store.log_metrics(trained.id, step, {f"alerts/{name}": 1.0})
    for step in range(1, ROLLOUT_STEPS + 1):
        store.log_rollouts(
            trained.id, step * STEPS // ROLLOUT_STEPS, "train", rollouts_at(step, ROLLOUTS_PER_STEP, rng)
        )
    store.finish(trained.id, summary={
        "rubric": {"weights": {"correct": 1.0, "format": 0.1}, "primary": "correct"},
        "alerts": [{"name": "entropy_collapse", "step": 1200, "message": "fell", "action": "warn"},
                   {"name": "grad_norm_spike", "step": 3777, "message": "spiked", "action": "warn"}],
    })  # fmt: skip
    config = {"model": {"name_or_path": str(trained.dir)}, "env": {"name": "tool_math"}}
    evaluated = store.create_run("eval", config, manifest={})
    store.log_rollouts(evaluated.id, 0, "eval", rollouts_at(ROLLOUT_STEPS // 2, 2000, rng))
    store.finish(
        evaluated.id, summary={"mean_reward": 0.5, "std_reward": 0.5, "pass@1": 0.45, "components": {}}
    )
    for i in range(EXTRA_RUNS):
        run = store.create_run("eval", {"model": {"name_or_path": "tiny"}, "env": {"name": "arithmetic"}},
                               manifest={}, name=f"sweep {i}", parent=trained.id)  # fmt: skip
        store.finish(run.id, summary={"mean_reward": rng.random(), "std_reward": 0.1})
    print(f"store built in {time.perf_counter() - started:.0f} s at {root}")
    return {"train": trained.id, "eval": evaluated.id}


def timed(client: TestClient, path: str, repeats: int) -> tuple[float, int]:
    seconds, size = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        response = client.get(path)
        seconds.append(time.perf_counter() - started)
        assert response.status_code == 200, (path, response.text[:200])
        size = len(response.content)
    return statistics.median(seconds), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        ids = build(root)
        client = TestClient(create_app(root))
        train, evaluated = ids["train"], ids["eval"]
        routes = [
            ("runs list (202 runs)", "/api/runs"),
            ("one run (detail, lineage)", f"/api/runs/{train}"),
            ("curves: 22 series x 5,000 steps, thinned to <= 1,000 points", f"/api/runs/{train}/curves"),
            ("curves: the run page's 14 standard series", f"/api/runs/{train}/curves?only=main"),
            ("rollouts: page 1 of 10,000 (20 per page)", f"/api/runs/{train}/rollouts?page=1&per_page=20"),
            ("rollouts: page 500 of 10,000 (deepest)", f"/api/runs/{train}/rollouts?page=500&per_page=20"),
            ("rollouts: one step", f"/api/runs/{train}/rollouts?step=2500"),
            ("eval summary (2,000 rollouts, bootstrap CI)", f"/api/runs/{evaluated}/eval"),
            ("audit of the 5,000-step run", f"/api/runs/{train}/audit"),
            ("without thinning: curves at 20,000 points", f"/api/runs/{train}/curves?points=20000"),
        ]
        print("\n| request | median | payload |\n|---|---:|---:|")
        for label, path in routes:
            seconds, size = timed(client, path, args.repeats)
            print(f"| {label} | {seconds * 1000:.0f} ms | {size / 1024:.0f} KiB |")
        store = RunStore(root)
        started = time.perf_counter()
        everything = store.rollouts(train)
        print(f"| without paging: all {len(everything):,} rollouts read (no JSON) | "
              f"{(time.perf_counter() - started) * 1000:.0f} ms | - |")  # fmt: skip


if __name__ == "__main__":
    main()
