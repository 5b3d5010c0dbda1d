"""Math answers compared as math, not as strings: ``\\frac{1}{2}``, ``0.5`` and ``1/2`` are one answer.

Built on math-verify, an optional dependency (``pip install 'rewardlab[math]'``) imported only when a
reward is created.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rewardlab.errors import RewardlabError
from rewardlab.rubrics.parsers import Parser

_MATH_DELIMITERS = ("$", "\\(", "\\[", "\\boxed")
_GOLD_CACHE_SIZE = 4096


def math_equivalence(
    use_parser: bool = True, float_rounding: int = 6, timeout_s: int = 5
) -> Callable[..., float]:
    """A reward: 1.0 when the model's answer equals the reference mathematically, 0.0 when it does not.

    With ``use_parser`` the answer is what the rubric's parser extracts (no answer: 0.0); without it
    math-verify searches the whole reply (``\\boxed{}``, ``$...$``, a final number). A bare expression
    such as ``[0, 1)`` or ``\\{1, 2\\}`` is read as latex math. Numbers are compared after rounding to
    ``float_rounding`` decimals; sets, intervals, fractions and equivalent expressions are compared
    symbolically. A reference that math-verify cannot read raises (an errored component: the dataset is
    at fault, not the model). ``timeout_s`` bounds math-verify's own parsing and comparison (it uses
    ``signal.alarm``, so only in a process's main thread; elsewhere the rubric's timeout is the bound).
    """
    try:
        from math_verify import parse, verify
    except ImportError as error:
        raise RewardlabError(
            "math_equivalence needs math-verify: install the math extra (pip install 'rewardlab[math]')"
        ) from error

    gold_cache: dict[str, list[Any]] = {}  # a reference answer is read once per process, not per rollout

    def alarm_seconds() -> int | None:
        return timeout_s if threading.current_thread() is threading.main_thread() else None

    def read(text: str) -> list[Any]:
        candidates = [text] if any(d in text for d in _MATH_DELIMITERS) else [f"${text}$", text]
        for candidate in candidates:
            parsed = parse(candidate, parsing_timeout=alarm_seconds())
            if parsed:
                return parsed
        return []

    def math_equivalence(completion: str, answer: str, parser: Parser) -> float:
        gold = gold_cache.get(answer)
        if gold is None:
            gold = read(answer.strip())
            if not gold:
                raise ValueError(f"math-verify cannot read the reference answer {answer!r}")
            if len(gold_cache) >= _GOLD_CACHE_SIZE:
                gold_cache.clear()
            gold_cache[answer] = gold
        text = parser.parse_answer(completion) if use_parser else completion
        if text is None or not text.strip():
            return 0.0
        predicted = read(text.strip()) if use_parser else parse(text, parsing_timeout=alarm_seconds())
        if not predicted:
            return 0.0
        equal = verify(gold, predicted, float_rounding=float_rounding, timeout_seconds=alarm_seconds())
        return 1.0 if equal else 0.0

    return math_equivalence
