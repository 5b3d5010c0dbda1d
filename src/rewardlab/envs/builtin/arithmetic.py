"""Arithmetic word-free problems (addition, subtraction, multiplication) with an exact checker.

Levels set the difficulty: 1 = one-digit addition, 2 = two-digit addition and subtraction, 3 = three-digit
addition and subtraction, 4 = two-digit times one-digit multiplication. A problem's split is decided by
a hash of its text, so the train and held-out splits never share a problem, whatever the seed.

Priming demonstrations can come from an ``exact`` teacher or a ``careless`` one that, with probability
``slip_rate``, forgets to carry (addition), to borrow (subtraction) or the carry of a product. This is
the situation reinforcement learning is for: demonstrations that are right only part of the time, and a
checker that is always right. SFT copies the teacher's slips; the reward does not.
"""

from __future__ import annotations

import random
from typing import Any

from rewardlab.envs.base import SingleTurnEnv
from rewardlab.envs.builtin.splits import Procedural, checked_levels, held_out
from rewardlab.envs.dataset import load_examples
from rewardlab.errors import RewardlabError
from rewardlab.rubrics.parsers import XMLParser
from rewardlab.rubrics.rewards import exact_answer
from rewardlab.rubrics.rubric import Rubric
from rewardlab.types import Example

LEVELS = {
    1: {"ops": "+", "digits": (1, 1)},
    2: {"ops": "+-", "digits": (2, 2)},
    3: {"ops": "+-", "digits": (3, 3)},
    4: {"ops": "*", "digits": (2, 1)},
}
SYSTEM_PROMPT = "Solve the problem. Reply with the result inside <answer></answer>."
# What an instruction-tuned model reads (prompt_style="chat"): the task, the answer format, an example.
CHAT_SYSTEM_PROMPT = (
    "You are a careful calculator. Work out the arithmetic problem the user gives you and reply with the "
    "integer result inside answer tags, for example <answer>42</answer>."
)


def _operands(rng: random.Random, level: int) -> tuple[int, str, int]:
    spec = LEVELS[level]
    digits_a, digits_b = spec["digits"]
    a = rng.randint(10 ** (digits_a - 1) if digits_a > 1 else 0, 10**digits_a - 1)
    b = rng.randint(10 ** (digits_b - 1) if digits_b > 1 else 0, 10**digits_b - 1)
    op = rng.choice(spec["ops"])
    if op == "-" and b > a:
        a, b = b, a  # keep results non-negative
    return a, op, b


def solve(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def phrase(rows: list[dict[str, Any]], prompt_style: str) -> list[dict[str, Any]]:
    """Rows worded for ``prompt_style``: terse rows stay ``47+38=``; chat rows ask ``What is 47 + 38?``.

    Only the wording changes: the problem, its answer, its id and its split are the same in both styles.
    """
    if prompt_style != "chat":
        return rows
    return [{**row, "prompt": "What is {a} {op} {b}?".format(**row["info"])} for row in rows]


def careless(a: int, op: str, b: int) -> int:
    """The teacher's slip, column by column: carries and borrows are forgotten.

    Addition writes each column's last digit and never carries (the leftmost column is written whole:
    52+69 -> 111); subtraction takes the smaller digit from the larger in every column (52-38 -> 26);
    multiplication drops the carry between partial digits (47*3 -> 121, i.e. 12|1 -> "1" "2" "1").
    """
    if op == "*":
        digits = [int(d) * b for d in str(a)]
        return int(str(digits[0]) + "".join(str(d % 10) for d in digits[1:]))
    width = max(len(str(a)), len(str(b)))
    da, db = str(a).zfill(width), str(b).zfill(width)
    if op == "+":
        columns = [int(x) + int(y) for x, y in zip(da, db, strict=True)]
        return int(str(columns[0]) + "".join(str(c % 10) for c in columns[1:]))
    return int("".join(str(abs(int(x) - int(y))) for x, y in zip(da, db, strict=True)))


class ArithmeticEnv(Procedural, SingleTurnEnv):
    name = "arithmetic"
    description = "Arithmetic with an exact checker; levels 1-4, disjoint held-out split."
    max_new_tokens_by_style = {"terse": 16, "chat": 48}

    def __init__(
        self,
        teacher: str = "exact",
        slip_rate: float = 0.0,
        teacher_seed: int = 0,
        levels: list[int] | None = None,
        eval_fraction: float = 0.1,
        **kwargs: Any,
    ):
        super().__init__(levels=levels or [2], eval_fraction=eval_fraction, **kwargs)
        if teacher not in ("exact", "careless"):
            raise ValueError(f"teacher must be 'exact' or 'careless', got '{teacher}'")
        if not 0.0 <= slip_rate <= 1.0:
            raise ValueError(f"slip_rate must be in [0, 1], got {slip_rate}")
        self.teacher = teacher
        self.slip_rate = slip_rate
        self.teacher_seed = teacher_seed

    def demonstration(self, example: Example, rng: random.Random | None = None) -> str:
        """The teacher's reply. The careless teacher slips with probability ``slip_rate`` on every draw
        (pass ``rng``), like an annotator who is right only some of the time; without ``rng`` the draw
        is fixed per problem."""
        a, op, b = example.info["a"], example.info["op"], example.info["b"]
        result = solve(a, op, b)
        if self.teacher == "careless":
            wrong = careless(a, op, b)
            rng = rng or random.Random(f"{self.teacher_seed}:{example.id}")
            if wrong != result and rng.random() < self.slip_rate:
                result = wrong
        return self.parser.format_answer(str(result))

    def fresh_candidates(self, n: int, seed: int) -> list[Example]:
        """New problems from the held-out side of the hash split, drawn with another seed."""
        rows = generate_problems(self.levels, n, "eval", seed + 10_000, self.eval_fraction)
        return load_examples(phrase(rows, self.prompt_style), self.system_prompt)

    def adversarial_examples(self, n: int, seed: int) -> list[Example]:
        """Held-out-side problems that all need a carry or borrow: where the careless teacher slips."""
        candidates = generate_problems(
            self.levels, 20 * n, "eval", seed + 20_000, self.eval_fraction, at_most=True
        )
        rows = [r for r in candidates if r["info"]["needs_carry"]]
        if len(rows) < n:
            raise RewardlabError(
                f"only {len(rows)} adversarial (carry) problems exist on the held-out side of levels "
                f"{self.levels}; ask for at most that many"
            )
        return load_examples(phrase(rows[:n], self.prompt_style), self.system_prompt)

    def policies(self):
        def oracle(messages, state, example, rng):
            return self.parser.format_answer(example.answer)

        def teacher(messages, state, example, rng):
            return self.demonstration(example, rng)

        def random_guess(messages, state, example, rng):
            return self.parser.format_answer(str(rng.randint(0, 2 * max(int(example.answer), 9))))

        return {"oracle": oracle, "careless": teacher, "random": random_guess}


def generate_problems(
    levels: list[int], count: int, split: str, seed: int, eval_fraction: float, at_most: bool = False
) -> list[dict[str, Any]]:
    """``count`` distinct problems of ``split``, levels mixed evenly.

    A level with few problems (level 1 has 100) drops out of the mix once it is used up, so the
    others fill the rest; when every level is used up, ``at_most`` returns what exists, otherwise
    ``count`` was too many and that is the caller's mistake to hear about.
    """
    rng = random.Random(f"arithmetic:{split}:{seed}")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    misses = dict.fromkeys(levels, 0)  # consecutive draws that found nothing new, per level
    turn = 0
    while len(rows) < count:
        active = [level for level in levels if misses[level] < 2_000]
        if not active:
            if at_most:
                return rows
            raise RewardlabError(
                f"only {len(rows)} distinct {split} problems exist for levels {levels}, asked for {count}"
            )
        level = active[turn % len(active)]
        turn += 1
        a, op, b = _operands(rng, level)
        problem = f"{a}{op}{b}"
        if problem in seen or held_out(problem, eval_fraction) != (split == "eval"):
            misses[level] += 1
            continue
        misses[level] = 0
        seen.add(problem)
        rows.append(
            {
                "id": f"{split}-{problem}",
                "prompt": problem + "=",
                "answer": str(solve(a, op, b)),
                # needs_carry: the careless teacher gets this one wrong; reports break results down by it.
                "info": {
                    "a": a,
                    "op": op,
                    "b": b,
                    "level": level,
                    "needs_carry": careless(a, op, b) != solve(a, op, b),
                },
            }
        )
    return rows


def load_environment(
    level: int | list[int] = 2,
    num_train: int = 5000,
    num_eval: int = 200,
    seed: int = 0,
    eval_fraction: float = 0.1,
    system_prompt: str | None = None,
    teacher: str = "exact",
    slip_rate: float = 0.7,
    format_weight: float = 0.1,
    prompt_style: str = "terse",
) -> ArithmeticEnv:
    """Arithmetic problems at ``level`` (an int or a list for a mix).

    ``prompt_style="terse"`` words problems as ``47+38=`` with no instructions, so a tiny character-level
    model can read them; ``"chat"`` (what rewardlab picks for a real model) asks ``What is 47 + 38?`` under
    :data:`CHAT_SYSTEM_PROMPT`. ``system_prompt`` replaces the instructions in either style. The rubric
    is the exact answer (weight 1) plus a small format reward (``format_weight``).
    """
    levels = checked_levels(level, LEVELS)
    parser = XMLParser()
    rubric = Rubric(
        [exact_answer, parser.format_reward_func()],
        weights=[1.0, format_weight],
        names=["correct", "format"],
        parser=parser,
    )
    return ArithmeticEnv(
        dataset=phrase(generate_problems(levels, num_train, "train", seed, eval_fraction), prompt_style),
        eval_dataset=phrase(generate_problems(levels, num_eval, "eval", seed, eval_fraction), prompt_style),
        system_prompt=system_prompt or (CHAT_SYSTEM_PROMPT if prompt_style == "chat" else None),
        rubric=rubric,
        parser=parser,
        teacher=teacher,
        slip_rate=slip_rate if teacher == "careless" else 0.0,
        teacher_seed=seed,
        levels=levels,
        eval_fraction=eval_fraction,
        prompt_style=prompt_style,
    )
