"""Parsers pull the answer out of a completion.

The rule that matters: reasoning may mention an answer tag while the model is thinking, so the answer is
the *last* ``<answer>`` block that is *outside* every ``<think>`` block.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rewardlab.errors import RewardlabError
from rewardlab.types import Messages


def _as_text(completion: str | Messages) -> str:
    """The text to read: the completion itself, or the content of its last assistant message ("" if none).

    A content of ``None`` (a turn of tool calls only) is empty; a list of OpenAI content parts is the text of
    its text parts. Anything else is a one-line error naming what was given.
    """
    if isinstance(completion, str):
        return completion
    if not isinstance(completion, list | tuple):
        raise RewardlabError(
            f"a completion must be text or a list of chat messages, got {type(completion).__name__}"
        )
    for index in range(len(completion) - 1, -1, -1):
        message = completion[index]
        if not isinstance(message, Mapping):
            raise RewardlabError(
                f"completion message {index} must be an object with 'role' and 'content', "
                f"got {type(message).__name__}"
            )
        if message.get("role") == "assistant":
            return _content_text(message.get("content"), index)
    return ""


def _content_text(content: Any, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(part, Mapping) for part in content):
        texts = [part.get("text") for part in content if part.get("type") == "text"]
        return "".join(text for text in texts if isinstance(text, str))
    raise RewardlabError(f"completion message {index}: 'content' must be text, got {type(content).__name__}")


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

        def format_reward(completion: str | Messages) -> float:
            return 1.0 if self.parse_answer(completion) is not None else 0.0

        return format_reward


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

        def format_reward(completion: str | Messages) -> float:
            text = self._outside_think(_as_text(completion))
            matches = self._answer.findall(text)
            if not matches or not matches[-1].strip():
                return 0.0
            clean = len(matches) == 1 and text.rstrip().endswith(close)
            return 1.0 if clean else 0.5

        return format_reward


@dataclass(frozen=True)
class ToolCall:
    """One tool call found in a completion: the tool's name and the text between the tags."""

    name: str
    arguments: str


class ToolCallParser(XMLParser):
    """Reads tool calls written as ``<tool name="calculator">12*(3+4)</tool>``, plus the final ``<answer>``.

    Tool calls inside ``<think>`` are ignored like answers are: thinking about a call is not making it.
    Calls come back in the order written; the tool's name is returned even when no such tool exists, so
    the environment can tell the model so instead of silently dropping the call.
    """

    def __init__(self, answer_tag: str = "answer", think_tag: str = "think", tool_tag: str = "tool"):
        super().__init__(answer_tag=answer_tag, think_tag=think_tag)
        self.tool_tag = tool_tag
        self._tool = re.compile(
            rf"<{tool_tag}\s+name\s*=\s*[\"']([^\"']*)[\"']\s*>(.*?)</{tool_tag}>", re.DOTALL
        )

    def parse_tool_calls(self, completion: str | Messages) -> list[ToolCall]:
        text = self._outside_think(_as_text(completion))
        return [ToolCall(name.strip(), arguments) for name, arguments in self._tool.findall(text)]

    def format_tool_call(self, name: str, arguments: str) -> str:
        return f'<{self.tool_tag} name="{name}">{arguments}</{self.tool_tag}>'


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Module-level, not an attribute: its C scanner cannot be pickled, and a parser must travel to the reward
# worker processes.
_STRICT_JSON = json.JSONDecoder(parse_constant=_reject_constant)


class JSONParser(Parser):
    """Reads the last JSON object in a completion, fenced (```json … ```) or bare, outside ``<think>``.

    "Last" means the object that ends last, so a model that drafts an object and then corrects it is read
    by its correction, and an object nested in another is never taken for the whole. Only objects count
    (not arrays or scalars), and only strict JSON (no single quotes, trailing commas, NaN). The answer is
    the decoded ``dict``, or ``None`` when no object parses.
    """

    def __init__(self, think_tag: str = "think", max_candidates: int = 256):
        self.think_tag = think_tag
        # Bounded so a completion full of braces costs at most this many decode attempts.
        self.max_candidates = max_candidates
        self._think = re.compile(rf"<{think_tag}>.*?(?:</{think_tag}>|$)", re.DOTALL) if think_tag else None

    def parse_answer(self, completion: str | Messages) -> dict[str, Any] | None:  # type: ignore[override]
        text = _as_text(completion)
        if self._think:
            text = self._think.sub(" ", text)
        starts = [i for i, char in enumerate(text) if char == "{"][-self.max_candidates :]
        best: tuple[int, int, dict[str, Any]] | None = None
        for start in starts:
            try:
                value, end = _STRICT_JSON.raw_decode(text, start)
            except (ValueError, RecursionError):  # not JSON, or nested deeper than Python's stack allows
                continue
            # ends last wins; for the same end, the outer (earlier-starting) object
            if isinstance(value, dict) and (best is None or end > best[0]):
                best = (end, start, value)
        return best[2] if best else None

    def format_answer(self, answer: Any) -> str:
        """``answer`` as one line of JSON; a string is taken to be JSON already and re-encoded."""
        value = json.loads(answer) if isinstance(answer, str) else answer
        return json.dumps(value)
