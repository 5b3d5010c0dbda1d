"""How often GSPO's sequence-level clip acts at token-sized epsilons (0.2) and at the paper's (3e-4/4e-4).

A tiny model learning an easy reward (the share of digits it writes), 8 steps of 4 passes each:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gspo_clipping.py
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from rewardlab.config import TrainConfig
from rewardlab.envs import SingleTurnEnv
from rewardlab.rubrics import Rubric
from rewardlab.runs import RunStore
from rewardlab.train.trainer import train


def digit_fraction(completion: str) -> float:
    return sum(c.isdigit() for c in completion) / max(len(completion), 1)


def main() -> None:
    rows = [{"prompt": f"say something {i}", "answer": ""} for i in range(32)]
    env = SingleTurnEnv(dataset=rows, eval_dataset=rows[:8], rubric=Rubric([digit_fraction]))
    runs = Path(tempfile.mkdtemp()) / "runs"
    store = RunStore(runs)
    for label, epsilons in (
        ("paper, 3e-4 / 4e-4", {}),
        ("token-sized, 0.2 / 0.2", {"epsilon_low": 0.2, "epsilon_high": 0.2}),
    ):
        config = TrainConfig.model_validate(
            {
                "runs_dir": str(runs),
                "loss_type": "gspo",
                "num_iterations": 4,
                "max_steps": 8,
                "prompts_per_step": 4,
                "group_size": 4,
                "optimizer": {"learning_rate": 1e-2},
                "sampling": {"max_new_tokens": 6},
                "lora": {"rank": 8, "alpha": 16},
                "log_rollouts_per_step": 0,
                **epsilons,
            }
        )
        run = train(config, store, env=env)
        metrics = store.metrics(run.run_id)
        clipped = [
            lo + hi
            for (_, lo), (_, hi) in zip(
                metrics["clip/low_fraction"], metrics["clip/high_fraction"], strict=True
            )
        ]
        print(f"{label}: clip acted on {statistics.fmean(clipped):.0%} of tokens")


if __name__ == "__main__":
    main()
