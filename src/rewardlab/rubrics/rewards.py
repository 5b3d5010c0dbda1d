"""Reward functions shared by environments. Each names only the arguments it needs."""

from __future__ import annotations

from rewardlab.rubrics.parsers import Parser


def exact_answer(completion: str, answer: str, parser: Parser) -> float:
    """1.0 when the parsed answer equals the reference, compared as stripped strings."""
    parsed = parser.parse_answer(completion)
    return 1.0 if parsed is not None and parsed.strip() == answer.strip() else 0.0


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").strip())
    except ValueError:
        return None


def numeric_answer(completion: str, answer: str, parser: Parser, tolerance: float = 1e-6) -> float:
    """1.0 when the parsed answer is a number within ``tolerance`` (absolute) of the reference."""
    parsed = parser.parse_answer(completion)
    if parsed is None:
        return 0.0
    value, reference = _number(parsed), _number(answer)
    if value is None or reference is None:
        return 0.0
    return 1.0 if abs(value - reference) <= tolerance else 0.0
