"""Reward functions shared by environments. Each names only the arguments it needs."""

from __future__ import annotations

from rewardlab.rubrics.parsers import Parser


def _reference(answer: str) -> str:
    """The row's reference answer; a row without one errors the component instead of scoring 0."""
    if not answer.strip():
        raise ValueError("this row has no reference answer")
    return answer


def exact_answer(completion: str, answer: str, parser: Parser) -> float:
    """1.0 when the parsed answer equals the reference, compared as stripped strings."""
    answer = _reference(answer)
    parsed = parser.parse_answer(completion)
    return 1.0 if parsed is not None and parsed.strip() == answer.strip() else 0.0


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").strip())
    except ValueError:
        return None


def numeric_answer(completion: str, answer: str, parser: Parser, tolerance: float = 1e-6) -> float:
    """1.0 when the parsed answer is a number within ``tolerance`` (absolute) of the reference."""
    reference = _number(_reference(answer))
    if reference is None:
        raise ValueError(f"the reference answer {answer!r} is not a number")
    parsed = parser.parse_answer(completion)
    value = _number(parsed) if parsed is not None else None
    if value is None:
        return 0.0
    return 1.0 if abs(value - reference) <= tolerance else 0.0
