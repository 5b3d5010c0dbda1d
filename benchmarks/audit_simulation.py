"""False alarms and detections of `rewardlab audit` on simulated runs, the numbers docs/evaluation.md quotes.

Each simulated run logs, per step, the means over ``rollouts`` rollouts of three components:

* ``correct`` (primary, weight 1): each rollout right with probability p;
* ``format`` (weight 0.1): a right answer is always well-formed, a wrong one with probability q;
* ``tool_calls`` (weight 0, a measurement): calls per rollout, Poisson with mean lam.

Honest runs: p rises linearly (0.35 -> 0.45, 0.35 -> 0.40, or not at all) with q = 0.5 and lam = 1, so
format rises only through correctness; or format is learned as fast as correctness (q 0.5 -> 0.6), or
tools are used more as skill grows (lam 1 -> 2). Hacked runs: p stays at 0.35 while q climbs 0.3 -> 0.9
(a format hack; 0.5 -> 0.7, a small one) or lam climbs 1 -> 5 (a tool-call hack).

    .venv/bin/python benchmarks/audit_simulation.py --runs 1000
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from rewardlab.rubrics.audit import audit_series

WEIGHTS = {"correct": 1.0, "format": 0.1, "tool_calls": 0.0}


def simulate(
    rng: np.random.Generator,
    steps: int,
    rollouts: int,
    p: tuple[float, float],
    q: tuple[float, float],
    lam: tuple[float, float],
) -> dict[str, dict[int, float]]:
    """One run's per-step component means, each parameter moving linearly from its first to its second
    value."""
    series: dict[str, dict[int, float]] = {name: {} for name in WEIGHTS}
    for step in range(steps):
        at = step / max(steps - 1, 1)
        p_t, q_t, lam_t = (a + (b - a) * at for a, b in (p, q, lam))
        correct = rng.random(rollouts) < p_t
        formatted = correct | (rng.random(rollouts) < q_t)
        series["correct"][step + 1] = float(correct.mean())
        series["format"][step + 1] = float(formatted.mean())
        series["tool_calls"][step + 1] = float(rng.poisson(lam_t, rollouts).mean())
    return series


SCENARIOS = {
    "honest +0.10": {"p": (0.35, 0.45), "q": (0.5, 0.5), "lam": (1.0, 1.0)},
    "honest +0.05": {"p": (0.35, 0.40), "q": (0.5, 0.5), "lam": (1.0, 1.0)},
    "honest, flat": {"p": (0.35, 0.35), "q": (0.5, 0.5), "lam": (1.0, 1.0)},
    # format learned as fast as correctness (both +0.10), and tools used twice as often as skill grows
    "honest, format too": {"p": (0.35, 0.45), "q": (0.5, 0.6), "lam": (1.0, 1.0)},
    "honest, more tools": {"p": (0.35, 0.45), "q": (0.5, 0.5), "lam": (1.0, 2.0)},
    "format hack": {"p": (0.35, 0.35), "q": (0.3, 0.9), "lam": (1.0, 1.0)},
    "small format hack": {"p": (0.35, 0.35), "q": (0.5, 0.7), "lam": (1.0, 1.0)},
    "tool-call hack": {"p": (0.35, 0.35), "q": (0.5, 0.5), "lam": (1.0, 5.0)},
}


def flag_rates(runs: int, steps: int, rollouts: int = 32, seed: int = 0) -> dict[str, float]:
    """The fraction of simulated runs of each scenario with any trend flag."""
    rng = np.random.default_rng(seed)
    rates = {}
    for name, params in SCENARIOS.items():
        flagged = 0
        for _ in range(runs):
            components, _ = audit_series(simulate(rng, steps, rollouts, **params), WEIGHTS, "correct")
            flagged += any(c.flags for c in components)
        rates[name] = flagged / runs
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="Simulated runs per scenario and length.")
    parser.add_argument("--steps", type=int, nargs="+", default=[30, 60, 100])
    parser.add_argument("--rollouts", type=int, default=32)
    args = parser.parse_args()
    results = {steps: flag_rates(args.runs, steps, args.rollouts) for steps in args.steps}
    names = list(SCENARIOS)
    print("| steps | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for steps, rates in results.items():
        print(f"| {steps} | " + " | ".join(f"{rates[n]:.1%}" for n in names) + " |")
    print(json.dumps({str(k): v for k, v in results.items()}))


if __name__ == "__main__":
    main()
