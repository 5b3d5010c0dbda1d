"""Checks for ``rewardlab data filter`` on the rows of word_problems.py: each takes a row and returns a reason
to reject it, or None to keep it.

    rewardlab data filter data/word_problems.jsonl --out data/word_problems.clean.jsonl \\
        --schema examples/data/word_problems.schema.json \\
        --check examples/data/word_problems_checks.py:answer_follows \\
        --check examples/data/word_problems_checks.py:plural_agrees --dedup near
"""

from __future__ import annotations

import re

OPERATIONS = {"add": lambda a, b: a + b, "subtract": lambda a, b: a - b, "multiply": lambda a, b: a * b}


def answer_follows(row: dict) -> str | None:
    """The answer is the prompt's two numbers put through ``info["operation"]``: a label that does not
    follow from its own problem would teach the wrong sum."""
    a, b = (int(number) for number in re.findall(r"\d+", row["prompt"])[:2])
    expected = OPERATIONS[row["info"]["operation"]](a, b)
    if int(row["answer"]) != expected:
        return f"answer {row['answer']} but {a} {row['info']['operation']} {b} is {expected}"
    return None


def plural_agrees(row: dict) -> str | None:
    """No "1 apples": the generator draws counts from 1 and always writes the plural."""
    found = re.search(r"\b1 (apples|marbles|stickers|coins|books|shells|bags)\b", row["prompt"])
    return f"says '{found.group(0)}'" if found else None
