"""Arithmetic word problems for ``rewardlab data generate``: three levels, three operations to balance.

Level 1 uses one-digit numbers, level 2 two digits, level 3 three. The generator is deliberately naive:
its subtractions may go below zero, which the schema (answers are whole numbers, no sign) rejects, so the
rejection count in the summary is real.

    rewardlab data generate --generator examples/data/word_problems.py:word_problem \\
        --schema examples/data/word_problems.schema.json --rows 1000 --out data/word_problems.jsonl \\
        --levels 1=0.5,2=0.3,3=0.2 --balance info.operation --seed 0
"""

from __future__ import annotations

import random

NAMES = ["Ada", "Bo", "Chen", "Dara", "Emil", "Fay", "Gus", "Hana"]
THINGS = ["apples", "marbles", "stickers", "coins", "books", "shells"]


def word_problem(rng: random.Random, level: int | None) -> dict:
    digits = level or 1
    a, b = (rng.randint(1, 10**digits - 1) for _ in range(2))
    name, friend = rng.sample(NAMES, 2)
    thing = rng.choice(THINGS)
    operation = rng.choice(["add", "subtract", "multiply"])
    if operation == "add":
        text, answer = f"{name} has {a} {thing} and {friend} gives {name} {b} more.", a + b
    elif operation == "subtract":
        text, answer = f"{name} has {a} {thing} and gives {b} of them to {friend}.", a - b
    else:
        text, answer = f"{name} has {a} bags with {b} {thing} in each.", a * b
    return {
        "prompt": f"{text} How many {thing} does {name} have now? Answer with the number only.",
        "answer": str(answer),
        "info": {"operation": operation, "level": digits},
    }
