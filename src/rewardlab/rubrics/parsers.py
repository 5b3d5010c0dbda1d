"""Parsers pull the answer out of a completion.

The rule that matters: reasoning may mention an answer tag while the model is thinking, so the answer is
the *last* ``<answer>`` block that is *outside* every ``<think>`` block.
"""

from __future__ import annotations

import re

from rewardlab.types import Messages


def _as_text(completion: str | Messages) -> str:
    if isinstance(completion, str):
        return completion
    for message in reversed(completion):
        if message.get("role") == "assistant":
            return message.get("content", "")
    return ""


class Parser:
    """The identity parser: the answer is the whole completion, stripped."""

    def parse_answer(self, completion: str | Messages) -> str | None:
        text = _as_text(completion).strip()
        return text or None

    def format_answer(self, answer: str) -> str:
        """How a demonstration of ``answer`` should look (used to prime a model with SFT)."""
        return answer

    def format_reward_func(self):
        """A reward in [0, 1] for following the expected format."""

        def format_reward(completion: str) -> float:
            return 1.0 if self.parse_answer(completion) is not None else 0.0

        return format_reward


_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)


class XMLParser(Parser):
    """Reads ``<answer>…</answer>`` (configurable tag), ignoring anything inside ``<think>…</think>``.

    An unclosed ``<think>`` hides everything after it: the model never finished thinking, so nothing it
    wrote there is an answer.
    """

    def __init__(self, answer_tag: str = "answer", think_tag: str = "think"):
        self.answer_tag = answer_tag
        self.think_tag = think_tag
        self._answer = re.compile(rf"<{answer_tag}>(.*?)</{answer_tag}>", re.DOTALL)
        self._think = re.compile(rf"<{think_tag}>.*?(?:</{think_tag}>|$)", re.DOTALL) if think_tag else None

    def _outside_think(self, text: str) -> str:
        return self._think.sub(" ", text) if self._think else text

    def parse_answer(self, completion: str | Messages) -> str | None:
        text = self._outside_think(_as_text(completion))
        matches = self._answer.findall(text)
        if not matches:
            return None
        return matches[-1].strip()

    def format_answer(self, answer: str) -> str:
        return f"<{self.answer_tag}>{answer}</{self.answer_tag}>"

    def format_reward_func(self):
        """1.0 for exactly one answer block outside thinking and nothing but whitespace after it;
        0.5 for a parsable answer with trailing text or several answer blocks; 0 otherwise."""
        close = f"</{self.answer_tag}>"

        def format_reward(completion: str) -> float:
            text = self._outside_think(completion)
            matches = self._answer.findall(text)
            if not matches or not matches[-1].strip():
                return 0.0
            clean = len(matches) == 1 and text.rstrip().endswith(close)
            return 1.0 if clean else 0.5

        return format_reward
