"""How the built-in environments' splits overlap by content: held-out against train (exact and
near-duplicate records) and fresh against held-out, at each environment's defaults.

    .venv/bin/python benchmarks/split_overlap.py
"""

from __future__ import annotations

import numpy as np

from rewardlab.envs.registry import list_environments, load_environment
from rewardlab.errors import RewardlabError
from rewardlab.runs.overlap import TrainingData, answer_key, content_hash, question_text, signatures


def main() -> None:
    print("| environment | held-out | seen in train | near-duplicates of train | fresh in held-out |")
    print("|---|---:|---:|---:|---:|")
    for name in list_environments():
        env = load_environment(name)
        train = env.train_examples
        trained = TrainingData(
            {content_hash(e.prompt, e.answer) for e in train},
            signatures(question_text(e.prompt) for e in train),
            np.array([answer_key(e.answer) for e in train], dtype=np.uint64),
        )
        held = env.eval_examples
        overlap = trained.check([(e.prompt, e.answer) for e in held])
        try:
            held_hashes = {content_hash(e.prompt, e.answer) for e in held}
            fresh = env.fresh_examples(len(held), seed=0)
            repeated = str(sum(content_hash(e.prompt, e.answer) in held_hashes for e in fresh))
        except RewardlabError:
            repeated = "no fresh set"
        print(f"| {name} | {len(held)} | {overlap.exact} | {overlap.near} | {repeated} |")


if __name__ == "__main__":
    main()
