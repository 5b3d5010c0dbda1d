"""A complete custom environment in one file: reverse a word, checked exactly.

    rewardlab eval  --env examples/reverse_env.py --model tiny -n 16 -r 4
    rewardlab sft   --env examples/reverse_env.py --set max_steps=300
    rewardlab train --env examples/reverse_env.py --model runs/<sft-run-id>

rewardlab calls ``load_environment(**kwargs)``; ``--set env.args.num_words=500`` reaches it.
"""

import random

from rewardlab.envs import SingleTurnEnv
from rewardlab.rubrics import Rubric, XMLParser

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def make_rows(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    words = {"".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 6))) for _ in range(count * 2)}
    return [{"prompt": f"reverse {w}", "answer": w[::-1]} for w in sorted(words)[:count]]


def load_environment(num_words: int = 400, seed: int = 0) -> SingleTurnEnv:
    parser = XMLParser()

    def reversed_exactly(completion: str, answer: str) -> float:
        return 1.0 if parser.parse_answer(completion) == answer else 0.0

    def shared_prefix(completion: str, answer: str) -> float:
        """Partial credit: how many leading characters are right (a denser signal for small models)."""
        guess = parser.parse_answer(completion) or ""
        right = next(
            (i for i, (a, b) in enumerate(zip(guess, answer, strict=False)) if a != b),
            min(len(guess), len(answer)),
        )
        return right / len(answer)

    rows = make_rows(num_words + 50, seed)
    return SingleTurnEnv(
        dataset=rows[:num_words],
        eval_dataset=rows[num_words:],
        rubric=Rubric(
            [reversed_exactly, shared_prefix, parser.format_reward_func()],
            weights=[1.0, 0.3, 0.1],
            parser=parser,
        ),
        parser=parser,
        name="reverse",
        description="Reverse a word; exact match plus prefix credit.",
    )
